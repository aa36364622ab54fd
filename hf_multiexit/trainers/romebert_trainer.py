"""RomeBERT training (Gao et al., "RomeBERT: Robust Training of Multi-Exit BERT", 2021)."""

from __future__ import annotations

import torch
from transformers.utils import logging

from ..losses import distillation_loss, project_conflicting, task_loss
from ..models.multiexit_bert.exit_strategies import REGRESSION
from .base import MultiExitTrainer, register_method
from .romebert_config import RomeBertConfig

logger = logging.get_logger(__name__)


@register_method("romebert", RomeBertConfig)
class RomeBertTrainer(MultiExitTrainer):
    """One stage, every parameter, the final exit as detached teacher:

        L = CE(z_L, y) + sum_{i<L} [ (1 - gamma) CE(z_i, y) + gamma T^2 KL(sg(p_L^T) || p_i^T) ]

    On a regression task the exits learn from the labels alone, `L = MSE(z_L, y) + sum_{i<L} MSE(z_i, y)`, unless
    `regression_distillation` adds `(1 - gamma) MSE(z_i, y) + gamma (z_i - sg(z_L))^2` instead (this project's
    extension: the paper's distillation is between class distributions, and its scripts cover classification only).

    Gradient regularisation (`gradient_regularization`):
    - `"gp"` (as released): `g_A` = gradient of the exit terms, `g_B` = gradient of `CE(z_L, y)`, both on the
      weight matrices of encoder layers 1..L-1 flattened into one vector; if `<g_B, g_A> < 0`,
      `g_B <- g_B - (<g_B, g_A> / ||g_A||^2) g_A` and those parameters get `g_A + g_B`; every other parameter gets
      the plain summed gradient; Trainer then clips to `max_grad_norm`. Under fp16 mixed precision `p.grad` holds
      the gradients times the GradScaler's scale `s`, so `g_A` is taken of the loss times `s` too
      (`gradient_scale`): the projection is positively homogeneous, `proj(s g_B, s g_A) = s proj(g_B, g_A)`, so
      the optimizer step's unscaling turns the projected scaled gradient into the projected gradient. A step whose
      scaled gradients overflowed stays non-finite through the projection, and the GradScaler still skips it.
    - `"ge"`: gradient equilibrium in the model's forward pass (see `MultiExitBertModel.forward`).
    Inference uses entropy exit.
    """

    args: RomeBertConfig

    def setup_model(self) -> None:
        super().setup_model()
        if self.problem_type == REGRESSION and not self.args.regression_distillation:
            # A warning where the user changed what will not be used, so a --gamma for STS-B is not dropped silently.
            defaults = {name: RomeBertConfig.__dataclass_fields__[name].default for name in ("gamma", "temperature")}
            changed = any(getattr(self.args, name) != value for name, value in defaults.items())
            (logger.warning if changed else logger.info)(
                "RomeBERT on a regression task: the exits learn from the labels alone; gamma=%s and temperature=%s "
                "apply only with regression_distillation=True.", self.args.gamma, self.args.temperature)

    def objective(self, outputs, labels):
        gamma, temperature = self.args.gamma, self.args.temperature
        teacher = outputs.all_logits[-1]
        if self.problem_type == REGRESSION and not self.args.regression_distillation:
            # A scalar prediction has no distribution over classes to distil: the teacher's value is a noisier copy
            # of the label. With it (squared error to sg(z_L), weight gamma) the final exit lost 2.9 and 1.2 Pearson
            # points on STS-B, seeds 42 and 43 (`benchmarks/results/ablations.md`, romebert-regression-distillation).
            exits = sum(task_loss(z, labels, self.problem_type) for z in outputs.all_logits[:-1])
        else:
            exits = sum(
                (1 - gamma) * task_loss(z, labels, self.problem_type)
                + gamma * distillation_loss(z, teacher, temperature, self.problem_type, self.args.kd_reduction)
                for z in outputs.all_logits[:-1]
            )
        return {"final": task_loss(teacher, labels, self.problem_type), "exits": exits}

    def forward_kwargs(self):
        return {"gradient_equilibrium": self.args.gradient_regularization == "ge"}

    def projection_parameters(self, model) -> list[torch.nn.Parameter]:
        """Weight matrices (not LayerNorm, not biases) of encoder layers 1..L-1 that are being trained (ALBERT's
        shared layers once each, so a layer shared with layer L is projected too)."""
        layers = {id(layer): layer for layer in self.unwrapped_model(model).base_model.layer_modules()[:-1]}
        return [p for layer in layers.values() for p in layer.parameters() if p.dim() == 2 and p.requires_grad]

    def training_step(self, model, inputs, num_items_in_batch=None):
        """With `gp`: backpropagates the summed loss as usual, keeps this micro-batch's `g_A` aside, and on the last
        micro-batch of an optimizer step (when the accumulated gradients are complete, and all-reduced when
        training on several processes) replaces the projected parameters' gradient `g_A + g_B` by
        `g_A + proj(g_B)`. Projecting the accumulated gradient, not each micro-batch's, is what makes
        `gradient_accumulation_steps=k` equal one batch `k` times larger."""
        if self.args.gradient_regularization != "gp":
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        inputs = self._prepare_inputs(inputs)
        labels = inputs["labels"]
        with self.compute_loss_context_manager():
            outputs = self.model_outputs(model, inputs)
            terms = {k: self.reduce(v, labels, num_items_in_batch) for k, v in self.objective(outputs, labels).items()}
            self._record_exit_losses(outputs.all_logits, labels)
        if num_items_in_batch is None:
            terms = {k: v / self.current_gradient_accumulation_steps for k, v in terms.items()}
        group_a, group_b = (terms["final"], terms["exits"]) if self.args.gp_swap_groups else (terms["exits"], terms["final"])
        params = self.projection_parameters(model)
        # Scaled as backward scales `p.grad` (fp16), so that the two can be mixed.
        scaled_a = group_a * self.gradient_scale()
        grads_a = torch.autograd.grad(scaled_a, params, retain_graph=True, allow_unused=True)
        flat_a = torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads_a)])
        self._gp_grad_a = flat_a if getattr(self, "_gp_grad_a", None) is None else self._gp_grad_a + flat_a
        loss = group_a + group_b
        self.accelerator.backward(loss)
        if self.accelerator.sync_gradients:
            self._project_accumulated_gradients(params)
        return loss.detach()

    def _project_accumulated_gradients(self, params: list[torch.nn.Parameter]) -> None:
        flat_a, self._gp_grad_a = self._gp_grad_a, None
        if self.accelerator.num_processes > 1:
            # DDP averaged p.grad over processes; g_A must be the same average to be subtracted from it.
            torch.distributed.all_reduce(flat_a)
            flat_a = flat_a / self.accelerator.num_processes
        total = torch.cat([p.grad.flatten() for p in params])
        projected = flat_a + project_conflicting(total - flat_a, flat_a)
        offset = 0
        for p in params:
            p.grad.copy_(projected[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
