"""Whole WarmFed runs through `flwr run` on one GPU, measured: phases, GPU memory and utilisation, throughput, MFU.

    scripts/gpu_run.sh OUT            # on a GPU machine: sized for under 8 minutes (not yet run on one)
    scripts/gpu_run.sh OUT --small    # a tiny pipeline and sizes on a CPU (what `make test` runs)

Everything goes under OUT:
1. (GPU only) the Stable Diffusion tests: `tests/test_generative_sd.py` (its backbone on CUDA) and
   `tests/test_stable_diffusion_run.py` (its simulated clients get no GPU share, the server uses
   CUDA), their log in `pytest_sd_cuda.log`;
2. a seeded image folder (`scripts/make_image_folder.py`: 6 domains, 10 classes, 512 px) and a
   Stable Diffusion 1.5-sized pipeline with random weights (`sd_pipeline_factory`), saved in fp16;
3. two whole `flwr run`s of WarmFed (1 round + DSD) at cut budgets, each with its own SuperLink
   (`warmfed_flwr.launch.run_app`): 4 clients at 0.25 GPU each, then the DomainNet-60 shape, 60
   clients (6 domains x 10) at 0.1 GPU each, to completion.

For each run `gpu_run.json` records the wall time and every phase's seconds, the LoRA steps/s of
one fit (its own timer) and of the whole phase, the server's generated images/s, the GPU's utilisation and memory (nvidia-smi, every
second), each process's peak GPU memory, the host memory (as `scripts/measure_scale.py` samples it),
and generation's MFU: the UNet and VAE-decoder FLOPs of one image (`torch.utils.flop_counter`)
times images/s over the device's peak (its nominal dense fp16 peak where known, and the measured
peak of a large matmul in the pipeline's dtype). `--small` runs the same steps in one run of 4
clients (2 domains x 2) on the CPU, without the pytest step (the suite itself runs those tests).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import torch
from torch.utils.flop_counter import FlopCounterMode

from warmfed_flwr.launch import run_app

# scripts/ is on sys.path when this file runs as a script
from measure_scale import MemorySampler, gib, label, own_flwr_home, run_sampled
from sd_pipeline_factory import build_sd15_sized_pipeline, build_tiny_pipeline

ROOT = Path(__file__).resolve().parents[1]
SD_TESTS = ("tests/test_generative_sd.py", "tests/test_stable_diffusion_run.py")
# nominal dense fp16/bf16 tensor-core peaks (FLOP/s), by the start of the name torch reports
NOMINAL_FP16_PEAKS = {"NVIDIA H100 80GB HBM3": 989.4e12, "NVIDIA H100 PCIe": 756.5e12, "NVIDIA H200": 989.4e12,
                      "NVIDIA A100": 312e12}
SD_TESTS_TIMEOUT = 240  # seconds
MATMUL_SIZE = {"cuda": 8192, "cpu": 1024}


@dataclass(frozen=True)
class RunShape:
    """One whole run: how many clients, each one's GPU share, and its cut budgets."""

    name: str
    domains: int
    clients_per_domain: int
    gpus_per_client: float
    lora_steps: int
    lora_batch_size: int
    images_per_client: int
    generate_steps: int

    @property
    def clients(self) -> int:
        return self.domains * self.clients_per_domain


@dataclass(frozen=True)
class Sizes:
    """The pipeline's resolution, the image folder and the runs."""

    resolution: int
    classes: int
    per_class: int
    classifier_size: int
    runs: tuple[RunShape, ...]


FULL = Sizes(
    resolution=512, classes=10, per_class=10, classifier_size=224,
    runs=(RunShape("4-clients", 4, 1, 0.25, lora_steps=20, lora_batch_size=4, images_per_client=40, generate_steps=30),
          # ten fits share the GPU at once: batch 1 keeps each well under a tenth of its memory
          RunShape("60-clients", 6, 10, 0.1, lora_steps=5, lora_batch_size=1, images_per_client=5, generate_steps=10)),
)
SMALL = Sizes(  # one run of 2 domains x 2 clients: the same code paths in a minute on two cores
    resolution=16, classes=3, per_class=6, classifier_size=16,
    runs=(RunShape("4-clients", 2, 2, 0.0, lora_steps=2, lora_batch_size=4, images_per_client=3, generate_steps=2),),
)
GUIDANCE = 7.5  # Stable Diffusion's usual scale: every sampler step runs the UNet twice


@dataclass
class GpuSampler:
    """nvidia-smi once a second: the GPU's utilisation and memory, and each process's peak GPU memory."""

    utilisation: list[float] = field(default_factory=list)
    memory_used_mib: list[float] = field(default_factory=list)
    process_peaks_mib: dict[int, tuple[str, float]] = field(default_factory=dict)
    available: bool = field(default_factory=lambda: shutil.which("nvidia-smi") is not None)

    def sample(self) -> None:
        if not self.available:
            return
        for line in query("--query-gpu=utilization.gpu,memory.used"):
            try:
                util, used = (float(value) for value in line.split(","))
            except ValueError:  # "[N/A]" where the driver does not say
                continue
            self.utilisation.append(util)
            self.memory_used_mib.append(used)
        for line in query("--query-compute-apps=pid,used_memory"):
            try:
                pid_text, used_text = (value.strip() for value in line.split(","))
                pid, used = int(pid_text), float(used_text)
            except ValueError:
                continue
            try:
                name = label(psutil.Process(pid))
            except psutil.Error:
                name = "gone"
            previous = self.process_peaks_mib.get(pid, (name, 0.0))[1]
            self.process_peaks_mib[pid] = (name, max(previous, used))

    def summary(self) -> dict[str, object]:
        if not self.available:
            return {"nvidia_smi": False}
        samples = len(self.utilisation)
        return {
            "nvidia_smi": True,
            "samples": samples,
            "utilisation_mean_percent": round(sum(self.utilisation) / samples, 1) if samples else None,
            "utilisation_max_percent": max(self.utilisation, default=None),
            "memory_used_peak_gib": round(max(self.memory_used_mib, default=0.0) / 1024, 2),
            "process_peaks_gib": sorted(({"label": name, "peak_gib": round(mib / 1024, 2)}
                                         for name, mib in self.process_peaks_mib.values()), key=lambda p: -p["peak_gib"]),
        }


def query(fields: str) -> list[str]:
    """nvidia-smi's CSV lines for `fields` (no header, no units)."""
    result = subprocess.run(["nvidia-smi", fields, "--format=csv,noheader,nounits"], capture_output=True, text=True)
    return [line for line in result.stdout.splitlines() if line.strip()] if result.returncode == 0 else []


def device_peaks(device: torch.device, dtype: torch.dtype) -> dict[str, object]:
    """The device's name, its nominal fp16 peak where known, and the measured FLOP/s of a large matmul in `dtype`."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    nominal = next((peak for key, peak in NOMINAL_FP16_PEAKS.items() if name.startswith(key)), None)
    size = MATMUL_SIZE[device.type]
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(5):
        synchronize(device)
        started = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    del a, b
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"device": name, "nominal_fp16_flops": nominal, "measured_matmul_flops": 2 * size**3 / best}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def unit_flops(pipeline: object) -> dict[str, float]:
    """FLOPs of one UNet denoising step of one image (with a text embedding) and of one image's VAE decode.

    PyTorch's flop counter counts matmuls, convolutions and CUDA's attention kernels; on the CPU it
    misses the attention kernel, so `--small` counts a little less than the pipeline does."""
    unet, vae, device, dtype = pipeline.unet, pipeline.vae, pipeline.unet.device, pipeline.unet.dtype
    latent = torch.zeros(1, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size,
                         device=device, dtype=dtype)
    text = torch.zeros(1, pipeline.tokenizer.model_max_length, unet.config.cross_attention_dim, device=device, dtype=dtype)
    with FlopCounterMode(display=False) as unet_counter:
        unet(latent, torch.tensor([500], device=device), encoder_hidden_states=text)
    with FlopCounterMode(display=False) as vae_counter:
        vae.decode(latent[:, : vae.config.latent_channels])
    return {"unet_step": unet_counter.get_total_flops(), "vae_decode": vae_counter.get_total_flops()}


def flops_per_image(unit: dict[str, float], steps: int, guidance: float) -> float:
    """One generated image: `steps` UNet steps (two per step under classifier-free guidance) and a VAE decode."""
    return unit["unet_step"] * steps * (2 if guidance > 1.0 else 1) + unit["vae_decode"]


def run_config(shape: RunShape, sizes: Sizes, data_root: Path, pipeline_dir: Path, out_dir: Path) -> dict[str, object]:
    """WarmFed, 1 round + DSD, on the image folder with the saved pipeline, at `shape`'s cut budgets."""
    return {
        "method": "warmfed", "rounds": 1, "seed": 0, "min-clients": 1, "timeout": 300.0,  # failures are recorded
        "output-dir": str(out_dir),
        "data.name": "imagefolder", "data.root": str(data_root), "data.image-size": sizes.classifier_size,
        "data.clients-per-domain": shape.clients_per_domain, "data.min-train-images": 2,
        "model.name": "resnet18",
        "lora.backbone": "stable-diffusion", "lora.model-path": str(pipeline_dir), "lora.targets": "attention",
        "lora.steps": shape.lora_steps, "lora.batch-size": shape.lora_batch_size,
        "generate.images-per-client": shape.images_per_client, "generate.steps": shape.generate_steps,
        "generate.guidance": GUIDANCE, "generate.batch-size": shape.images_per_client,
        "server.epochs": 2, "train.local-epochs": 1, "dsd.epochs": 1,
    }


def measured_run(shape: RunShape, config: dict[str, object], image_flops: float, peaks: dict[str, object]) -> dict:
    """One whole `flwr run` with the host and GPU sampled every second; its figures."""
    flwr_home = own_flwr_home()
    host, gpu = MemorySampler(flwr_home), GpuSampler()
    out_dir, wall = run_sampled(
        lambda: run_app(config, ROOT, cpus_per_client=1, gpus_per_client=shape.gpus_per_client),
        flwr_home, host.sample, gpu.sample,
    )
    results = json.loads((out_dir / "results.json").read_text())
    phases = {phase["name"]: phase["seconds"] for phase in results["phases"]}
    details = [client["details"] for client in results["clients"]]
    fitted = [d["fit_seconds"] for d in details if "fit_seconds" in d]
    images_per_s = sum(d.get("synthetic_images", 0) for d in details) / phases["warmstart-generate"]
    achieved = images_per_s * image_flops
    return {
        "shape": asdict(shape) | {"clients": shape.clients},
        "wall_seconds": round(wall, 1),
        "phases": phases,
        "failures": results["failures"],
        "global_acc": results["averages"].get("global_acc"),
        # one client's fit alone (its own timer, without loading the model), and the federation's phase
        "lora_steps_per_s_per_fit": round(shape.lora_steps * len(fitted) / sum(fitted), 3) if fitted else None,
        "lora_steps_per_s_phase": round(shape.lora_steps * len(fitted) / phases["lora"], 3),
        "generated_images_per_s": images_per_s,  # the server's phase: adapter loading and VAE decoding included
        "generation_flops_per_s": achieved,
        "generation_mfu_nominal": achieved / peaks["nominal_fp16_flops"] if peaks["nominal_fp16_flops"] else None,
        "generation_fraction_of_matmul_peak": achieved / peaks["measured_matmul_flops"],
        "gpu": gpu.summary(),
        "host_peak_pss_sum_gib": gib(host.peak_pss),
    }


def run_sd_tests(out: Path) -> int:
    """The Stable Diffusion tests, on CUDA where the machine has it; their output in pytest_sd_cuda.log."""
    with (out / "pytest_sd_cuda.log").open("w") as log:
        try:
            return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SD_TESTS],
                                  cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=SD_TESTS_TIMEOUT).returncode
        except subprocess.TimeoutExpired:
            log.write(f"\nstopped after {SD_TESTS_TIMEOUT} s\n")
            return -1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for every figure and log")
    parser.add_argument("--small", action="store_true", help="tiny pipeline and sizes on the CPU, no pytest step")
    parser.add_argument("--work", type=Path, help="folder for the pipeline and the image folder (default: a temporary one)")
    args = parser.parse_args()
    sizes = SMALL if args.small else FULL
    device = torch.device("cuda" if torch.cuda.is_available() and not args.small else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # `flwr` beside python
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # ten fits share one GPU
    record: dict[str, object] = {"small": args.small, "resolution": sizes.resolution, "guidance": GUIDANCE}
    if not args.small:
        record["sd_tests_exit_code"] = run_sd_tests(args.out)
    record["peaks"] = peaks = device_peaks(device, dtype)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-run-"))
    try:
        record["runs"] = measure_runs(sizes, device, dtype, work, args.out, record)
    finally:
        if not args.work:
            shutil.rmtree(work)
    print(json.dumps(record, indent=2))
    failed = any(run["failures"] for run in record["runs"].values())
    return 0 if record.get("sd_tests_exit_code", 0) == 0 and not failed else 1


def measure_runs(sizes: Sizes, device: torch.device, dtype: torch.dtype, work: Path, out: Path,
                 record: dict[str, object]) -> dict[str, object]:
    """The image folder and the saved pipeline under `work`, then each run; `record` is written after each run."""
    folder, pipeline_dir = work / "images", work / "pipeline"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_image_folder.py"), "--out", str(folder),
                    "--domains", str(max(shape.domains for shape in sizes.runs)), "--classes", str(sizes.classes),
                    "--per-class", str(sizes.per_class), "--size", str(sizes.resolution)], check=True)
    pipeline = (build_tiny_pipeline(sizes.resolution) if sizes is SMALL
                else build_sd15_sized_pipeline(sizes.resolution, device=device))
    pipeline.to(dtype=dtype).save_pretrained(str(pipeline_dir), safe_serialization=True)
    record["unit_flops"] = unit = unit_flops(pipeline)
    del pipeline  # the runs' processes load it from disk; this one keeps only its CUDA context
    if device.type == "cuda":
        torch.cuda.empty_cache()
    runs: dict[str, object] = {}
    for shape in sizes.runs:
        data_root = work / f"data-{shape.name}"
        data_root.mkdir(exist_ok=True)
        for domain in sorted(path for path in folder.iterdir() if path.is_dir())[: shape.domains]:
            if not (data_root / domain.name).exists():
                (data_root / domain.name).symlink_to(domain)
        config = run_config(shape, sizes, data_root, pipeline_dir, out / "runs" / shape.name)
        image_flops = flops_per_image(unit, shape.generate_steps, GUIDANCE)
        runs[shape.name] = measured_run(shape, config, image_flops, peaks=record["peaks"]) | {"flops_per_image": image_flops}
        record["runs"] = runs
        (out / "gpu_run.json").write_text(json.dumps(record, indent=2) + "\n")  # nothing lost if a later run fails
    return runs


if __name__ == "__main__":
    sys.exit(main())
