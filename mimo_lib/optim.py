"""The optimizer and the learning-rate schedule every trainer in ``mimo_lib`` uses (chapter 7 builds both).

* :func:`make_optimizer`: AdamW over the trainable parameters; matrices decay, biases and norms do not
  (as nanoGPT and Megatron-LM);
* :class:`WarmupCosineSchedule`: a linear warm-up to the peak, then a cosine down to ``min_lr``,

  .. math::  \\eta(s) = \\eta_{min} + \\tfrac12\\,(1 + \\cos(\\pi\\,p))\\,(\\eta_{max} - \\eta_{min}),
     \\qquad p = \\frac{s - s_{warm}}{s_{end} - s_{warm}},

  with a *continuation*: a resumed run that raises ``train_iters`` keeps every step it already took and
  continues the cosine from the learning rate it stopped at down to ``min_lr`` at the new end, instead of
  re-warming (:meth:`WarmupCosineSchedule.extended_to`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch


def make_optimizer(
    named_parameters, lr: float, weight_decay: float
) -> tuple[torch.optim.AdamW, list[str]]:
    """AdamW over the parameters that require gradients; returns it and their names in optimizer order.

    ``named_parameters``: an iterable of ``(name, parameter)``, e.g. ``model.named_parameters()``.
    """
    decay, no_decay, names_decay, names_no_decay = [], [], [], []
    for name, p in named_parameters:
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
        (names_decay if p.dim() >= 2 else names_no_decay).append(name)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr), names_decay + names_no_decay


@dataclass
class WarmupCosineSchedule:
    """Linear warm-up to ``lr`` over ``warmup_iters`` steps, then a cosine down to ``min_lr`` at ``train_iters``.

    Steps are 1-based: ``schedule(1)`` is the learning rate of the first update. ``previous`` (the
    ``state_dict`` of the schedule this one extends) and ``restart_step`` describe a continuation: the
    steps up to ``restart_step`` keep the previous schedule's rates (see :meth:`extended_to`).
    """

    lr: float
    min_lr: float
    warmup_iters: int
    train_iters: int
    restart_step: int = 0
    previous: dict[str, Any] | None = None

    def __call__(self, step: int) -> float:
        if self.previous is not None:  # a continuation
            before = WarmupCosineSchedule(**self.previous)
            if step <= self.restart_step:
                return before(step)
            start, peak = self.restart_step, before(self.restart_step)
        elif step <= self.warmup_iters:
            return self.lr * step / self.warmup_iters
        else:
            start, peak = self.warmup_iters, self.lr
        progress = (step - start) / max(1, self.train_iters - start)  # (0, 1]
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))) * (peak - self.min_lr)

    def extended_to(self, train_iters: int, done_steps: int) -> WarmupCosineSchedule:
        """The same schedule for the ``done_steps`` already taken, then a cosine from their last learning rate
        down to ``min_lr`` at the new ``train_iters`` (a longer run that continues, not one that re-warms)."""
        if train_iters == self.train_iters or done_steps <= self.warmup_iters:
            return replace(self, train_iters=train_iters)  # nothing decayed yet: the plain schedule, longer
        return WarmupCosineSchedule(
            self.lr, self.min_lr, self.warmup_iters, train_iters, restart_step=done_steps, previous=self.state_dict()
        )

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> WarmupCosineSchedule:
        return cls(**state)


def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """Clip the gradients to a global norm of at most ``max_norm``; returns the norm before clipping.

    One process: ``torch.nn.utils.clip_grad_norm_``. With a tensor-parallel decoder (megatron backend, TP > 1)
    a split weight's gradient lives in pieces on several ranks: its squared norm is summed over the
    tensor-parallel group, while a replicated tensor (a LayerNorm, a tower) counts once — the norm one process
    holding the whole model would compute, as Megatron's own ``clip_grad_norm_fp32`` does.
    """
    parameters = [p for p in parameters if p.grad is not None]
    tp_size, group = _tensor_parallel_group()
    if tp_size == 1:
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    split = [p for p in parameters if getattr(p, "tensor_model_parallel", False)]
    replicated = [p for p in parameters if not getattr(p, "tensor_model_parallel", False)]
    device = parameters[0].grad.device
    split_sq = sum((p.grad.float().pow(2).sum() for p in split), torch.zeros((), device=device))
    torch.distributed.all_reduce(split_sq, group=group)  # every rank's piece of every split weight
    replicated_sq = sum((p.grad.float().pow(2).sum() for p in replicated), torch.zeros((), device=device))
    norm = (split_sq + replicated_sq).sqrt()
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for p in parameters:
        p.grad.mul_(scale.to(p.grad.dtype))
    return norm


def _tensor_parallel_group():
    """``(size, group)`` of megatron-core's tensor-parallel group, ``(1, None)`` when none is set up."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return 1, None
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return 1, None
    return parallel_state.get_tensor_model_parallel_world_size(), parallel_state.get_tensor_model_parallel_group()
