"""Complete Stable Diffusion pipelines built from configs alone, with random weights (no download).

Two sizes: a tiny one whose every stage runs on a CPU in milliseconds (tests, `--small` checks),
and one with Stable Diffusion 1.5's real layer sizes (UNet, VAE and CLIP text encoder) for timing
and memory checks on a GPU. Both use a character-level CLIP tokenizer built in memory: every text
tokenizes without unknown tokens, and different class prompts give different token sequences.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

PROMPT_TOKENS = 77
SD15_VOCAB_SIZE = 49408
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"


def char_level_clip_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer whose vocabulary is the 256 byte-level characters, alone and word-final.

    No merges: each character is one token (ids 0-511), followed by BOS (512) and EOS (513).
    """
    characters = sorted(ByteLevel.alphabet())
    tokens = characters + [c + "</w>" for c in characters] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=PROMPT_TOKENS)


def _text_encoder_config(tokenizer: CLIPTokenizer, **sizes: int) -> CLIPTextConfig:
    """A CLIPTextConfig whose special token ids agree with `tokenizer`."""
    return CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=PROMPT_TOKENS,
        **sizes,
    )


def _sd_scheduler() -> DDIMScheduler:
    """DDIM with Stable Diffusion 1.x's noise schedule (scaled linear betas 0.00085 to 0.012)."""
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def _assemble(
    unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer
) -> StableDiffusionPipeline:
    """A StableDiffusionPipeline without safety checker or feature extractor."""
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_sd_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_pipeline(resolution: int = 16, seed: int = 0) -> StableDiffusionPipeline:
    """A Stable Diffusion pipeline a few hundred kilobytes large, generating `resolution` px images.

    Its VAE downsamples by 2, so `resolution` must be a multiple of 8 (the pipeline's own rule).
    """
    if resolution % 8:
        raise ValueError(f"resolution must be a multiple of 8, got {resolution}")
    tokenizer = char_level_clip_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=resolution // 2,
            block_out_channels=(16, 32),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=4,
            norm_num_groups=8,
        )
        vae = AutoencoderKL(
            sample_size=resolution,
            block_out_channels=(8, 16),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4,
            norm_num_groups=4,
        )
        text_encoder = CLIPTextModel(
            _text_encoder_config(
                tokenizer,
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                projection_dim=32,
            )
        )
    return _assemble(unet, vae, text_encoder, tokenizer)


def build_sd15_sized_pipeline(
    resolution: int = 512, device: torch.device | str = "cpu", seed: int = 0
) -> StableDiffusionPipeline:
    """A pipeline with Stable Diffusion 1.5's layer sizes and random weights, built on `device`.

    UNet: channels (320, 640, 1280, 1280), 2 layers per block, cross-attention dim 768, head dim 8.
    VAE: channels (128, 256, 512, 512), 4 latent channels (downsamples by 8). CLIP text encoder:
    hidden 768, 12 layers, 12 heads, MLP 3072, 77 positions, a 49,408-row embedding table (the
    tokenizer uses only its first rows). `resolution` must be a multiple of 64.
    """
    if resolution % 64:
        raise ValueError(f"resolution must be a multiple of 64 for the SD 1.5-sized pipeline, got {resolution}")
    tokenizer = char_level_clip_tokenizer()
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=resolution // 8,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            cross_attention_dim=768,
            attention_head_dim=8,
        )
        vae = AutoencoderKL(
            sample_size=resolution,
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
        )
        text_encoder = CLIPTextModel(
            _text_encoder_config(
                tokenizer,
                vocab_size=SD15_VOCAB_SIZE,
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                projection_dim=768,
                hidden_act="quick_gelu",
            )
        )
    return _assemble(unet, vae, text_encoder, tokenizer)
