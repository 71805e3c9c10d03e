"""Personal models a client keeps between rounds, in its node state: FedBN's local batch-norm layers and
Ditto's personal model.

FedBN (Li et al., 2021) averages every layer but batch norm: each client keeps its own batch-norm
statistics and affine parameters, and sends and receives only the rest. Ditto (Li et al., 2021)
trains, next to each round's local update of the global model, a personal model pulled towards
the global one by (lambda / 2) ||v - w||^2.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, RecordDict
from torch import nn

LOCAL_NORM = "fedbn-local-norm"  # node-state record: this client's batch-norm tensors
PERSONAL_MODEL = "ditto-personal-model"  # node-state record: this client's Ditto model
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def batch_norm_keys(model: nn.Module) -> set[str]:
    """The state-dict keys of `model`'s batch-norm layers (weights, biases, running statistics)."""
    return {
        f"{name}.{key}" for name, module in model.named_modules() if isinstance(module, BATCH_NORMS)
        for key in module.state_dict()
    }


def without_batch_norm(model: nn.Module) -> ArrayRecord:
    """What a FedBN client sends: every tensor of `model` but its batch-norm layers'."""
    norm = batch_norm_keys(model)
    return ArrayRecord({k: v.detach().cpu() for k, v in model.state_dict().items() if k not in norm})


def keep_local_norm(model: nn.Module, state: RecordDict) -> None:
    """Keep `model`'s batch-norm tensors in the node state (FedBN)."""
    norm = batch_norm_keys(model)
    state[LOCAL_NORM] = ArrayRecord({k: v.detach().cpu() for k, v in model.state_dict().items() if k in norm})


def load_with_local_norm(model: nn.Module, received: ArrayRecord, state: RecordDict) -> nn.Module:
    """`received` loaded into `model`, this client's own batch-norm tensors over it where it has them (FedBN).

    The first round's model carries every tensor; later ones only the averaged, non-batch-norm ones.
    """
    tensors = received.to_torch_state_dict()
    if LOCAL_NORM in state:
        tensors.update(state[LOCAL_NORM].to_torch_state_dict())
    missing = sorted(set(model.state_dict()) - set(tensors))
    if missing:
        raise ValueError(f"the received model lacks {missing[:3]} and this client keeps no batch-norm layers of its own")
    model.load_state_dict(tensors, strict=True)
    return model


def personal_model(model: nn.Module, global_model: nn.Module, state: RecordDict) -> nn.Module:
    """This client's Ditto model from the node state, loaded into `model`; the global model's weights before
    its first round."""
    source = state[PERSONAL_MODEL].to_torch_state_dict() if PERSONAL_MODEL in state else global_model.state_dict()
    model.load_state_dict(source, strict=True)
    return model


def keep_personal_model(model: nn.Module, state: RecordDict) -> None:
    """Keep `model` as this client's Ditto model in the node state."""
    state[PERSONAL_MODEL] = ArrayRecord({k: v.detach().cpu() for k, v in model.state_dict().items()})


def detached_parameters(model: nn.Module) -> list[torch.Tensor]:
    """Copies of `model`'s parameters (an anchor for a proximal term)."""
    return [parameter.detach().clone() for parameter in model.parameters()]
