"""SmartBERT training (Hu et al., "SmartBERT: A Promotion of Dynamic Early Exiting Mechanism for Accelerating BERT
Inference", IJCAI 2023)."""

from __future__ import annotations

import itertools
import os

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..losses import skip_reward, task_loss, token_info_nce
from .base import MultiExitTrainer, move_to_own_groups, register_method
from .callbacks import ZeroGradAfterStep
from .smartbert_config import SmartBertConfig

PROJECTIONS_NAME = "smartbert_projections.safetensors"


def projection_mlp(in_size: int, out_size: int) -> nn.Sequential:
    """The released code's contrastive projection: Linear -> LayerNorm -> tanh -> Linear."""
    return nn.Sequential(nn.Linear(in_size, out_size), nn.LayerNorm(out_size), nn.Tanh(), nn.Linear(out_size, out_size))


@register_method("smartbert", SmartBertConfig)
class SmartBertTrainer(MultiExitTrainer):
    """Two stages in one `train()` call, each with a fresh optimizer and schedule. With `h_i` the gated state after
    layer `i`, `g_i` the skip gates' probabilities and `z_i` the exits' logits:

    1. `"backbone"` (embeddings, layers, gates, final classifier, layer projections `P_i`):
       `(1 - eta1) [CE(z_L, y) + lambda / sum_i mean_b(g_i)] + eta1 sum_{i=1}^{L-1} InfoNCE(P_i(h_i), P_{i+1}(h_{i+1}); tau1)`,
       a token-level InfoNCE (`losses.token_info_nce`: positive = the same token one layer up, padding masked).
       The layers are weighted by the soft `g_i` for the first `soft_gate_fraction` of the epochs (shortened to
       leave at least `min_hard_gate_epochs` of hard gates), then by the straight-through hard weight
       `g + sg(1[g >= r] - g)` (`MultiExitBertModel._gate_weight`).
    2. `"exits"` (everything above frozen, gates hard; intermediate exits and exit projections `Q_e` train):
       `(1 - eta2) sum_{e<L} CE(z_e, y) + eta2 mean_e InfoNCE(Q_e(f_e), Q_{e+1}(f_{e+1}); tau2)`, where the exit
       heads read their layer's own output `Layer_e(h_{e-1})` (what they see at inference) and `f_e` is the head's
       token features `tanh(W_0 Layer_e(h_{e-1}))`.

    Inference (saved exit rule): strategy `skip` (a layer whose gate is `>= r` is skipped, with no exit check; the
    others run and exit when `H(p_i) < S`).

    Choices, against the released code: the cross-layer contrast pairs the layer outputs `h_1..h_L` (released: the
    layer inputs `h_0..h_{L-1}`); padding is neither anchor nor negative; the stage-2 InfoNCE keeps the positive in
    its denominator like stage 1 and averages over all consecutive pairs of intermediate exits (released: positive
    left out, last pair dropped, sum divided by `L-2`); no checkpoint is selected on the dev set. The skipping reward
    is a batch-level term, so with gradient accumulation it uses each micro-batch's mean gate (every other term
    accumulates exactly). The projection MLPs are training-only: the trainer owns them (they are not part of the
    saved model), trains them in its optimizer, clips them with the model and stores them in every checkpoint as
    `smartbert_projections.safetensors`, so training resumes exactly in either stage.
    """

    args: SmartBertConfig
    stages = ("backbone", "exits")

    def __init__(self, model=None, args: SmartBertConfig | None = None, **kwargs):
        self._attention_mask: torch.Tensor | None = None
        super().__init__(model=model, args=args, **kwargs)
        self.add_callback(ZeroGradAfterStep(lambda: self.projections.parameters()))

    def setup_model(self) -> None:
        """Checks that the model has skip gates and attention heads, and builds the projection MLPs for its sizes."""
        config = self.model.config
        if not config.use_skip_gates:
            raise ValueError("SmartBERT needs a model with skip gates: load it with use_skip_gates=True.")
        if config.exit_head != "attention":
            raise ValueError(
                f"SmartBERT needs attention exit heads (exit_head='attention'), got exit_head={config.exit_head!r}: its "
                "stage-2 contrastive loss reads the heads' token features."
            )
        super().setup_model()
        size = self.args.projection_size
        self.projections = nn.ModuleDict(
            {
                "layers": nn.ModuleList(projection_mlp(config.hidden_size, size) for _ in range(config.num_hidden_layers)),
                "exits": nn.ModuleList(projection_mlp(config.exit_head_hidden_size, size) for _ in config.exit_layers[:-1]),
            }
        ).to(self.args.device)

    # ----------------------------------------------------------------------------------------------- objective
    def soft_gate_epochs(self) -> float:
        """Epochs of stage 1's soft phase: `min(f E, E - h)` where `E > h`, else `f E` (`E` stage 1's epochs, `f` =
        `soft_gate_fraction`, `h` = `min_hard_gate_epochs`)."""
        epochs = self.state.num_train_epochs or 0
        soft, hard = self.args.soft_gate_fraction * epochs, self.args.min_hard_gate_epochs
        return min(soft, epochs - hard) if epochs > hard else soft

    def gate_mode(self) -> str:
        """Soft gates for stage 1's soft phase (`soft_gate_epochs`), hard ones after and in stage 2."""
        soft_epochs = self.soft_gate_epochs()
        if self.stage == "backbone" and (self.state.epoch or 0.0) < soft_epochs:
            return "soft"
        return "hard"

    def forward_kwargs(self):
        return {"output_hidden_states": True, "gate_mode": self.gate_mode()}

    def model_outputs(self, model, inputs):
        # The contrastive terms mask padding, and `objective` sees only the outputs.
        mask = inputs.get("attention_mask")
        self._attention_mask = torch.ones_like(inputs["input_ids"]) if mask is None else mask
        return super().model_outputs(model, inputs)

    def objective(self, outputs, labels):
        mask = self._attention_mask
        if self.stage == "backbone":
            eta, tau = self.args.stage1_contrastive_weight, self.args.stage1_temperature
            views = [project(h) for project, h in zip(self.projections["layers"], outputs.hidden_states[1:])]
            return {
                "final": (1 - eta) * task_loss(outputs.all_logits[-1], labels, self.problem_type),
                "skip": (1 - eta) * skip_reward(
                    outputs.gate_probs, self.args.skip_lambda, self.args.skip_reward_reference_layers
                ),
                "contrastive": eta * sum(token_info_nce(a, b, mask, tau) for a, b in zip(views, views[1:])),
            }
        eta, tau = self.args.stage2_contrastive_weight, self.args.stage2_temperature
        heads = self.unwrapped_model().base_model.exits
        views = [
            project(torch.tanh(head.features.proj(outputs.layer_outputs[layer - 1])))
            for project, head, layer in zip(self.projections["exits"], heads, self.exit_layers[:-1])
        ]
        pairs = list(zip(views, views[1:]))
        no_pairs = outputs.all_logits[-1].new_zeros(labels.shape[0], dtype=torch.float)
        contrastive = sum(token_info_nce(a, b, mask, tau) for a, b in pairs) / len(pairs) if pairs else no_pairs
        return {
            "exits": (1 - eta) * sum(task_loss(z, labels, self.problem_type) for z in outputs.all_logits[:-1]),
            "contrastive": eta * contrastive,
        }

    # ----------------------------------------------------------------------------------------------- stages
    def stage_trainable(self, index, model):
        intermediate = self.intermediate_exit_parameters(model)
        if index == 1:
            return intermediate
        frozen = {id(p) for p in intermediate}
        return [p for p in model.parameters() if id(p) not in frozen]

    def stage_arguments(self, index):
        if index == 0:
            return {}
        overrides = {"num_train_epochs": self.args.stage2_num_train_epochs, "learning_rate": self.args.stage2_learning_rate}
        return {name: value for name, value in overrides.items() if value is not None}

    def stage_projections(self) -> list[nn.Parameter]:
        return list(self.projections["layers" if self.stage == "backbone" else "exits"].parameters())

    # ----------------------------------------------------------------------------------------------- projections
    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.stage == "backbone" and self.args.gate_learning_rate is not None:
            move_to_own_groups(optimizer, list(self.unwrapped_model(model).base_model.skip_gates.parameters()),
                               self.args.gate_learning_rate)
        params = self.stage_projections()
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if params and id(params[0]) not in present:
            # Stage-2 projections feed the exits' loss, so they learn at the exits' rate.
            exit_rate = self.args.exit_learning_rate if self.stage == "exits" else None
            optimizer.add_param_group(
                {"params": params, "weight_decay": self.args.weight_decay, "lr": exit_rate or self.args.learning_rate}
            )
        return optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.num_processes > 1 and self.accelerator.sync_gradients:
            # The projections live outside the DDP-wrapped model: average their gradients as DDP does the model's.
            for p in self.stage_projections():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= self.accelerator.num_processes
        return loss

    def _clip_grad_norm(self, model):
        # No public hook sits between backward and the optimizer step. `clip_grad_norm_` first unscales the fp16
        # gradients of every parameter in the optimizer, the projections' included, so they are clipped unscaled.
        parameters = itertools.chain(model.parameters(), self.stage_projections())
        return self.accelerator.clip_grad_norm_(parameters, self.args.max_grad_norm)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            state = {k: v.detach().contiguous().cpu() for k, v in self.projections.state_dict().items()}
            save_file(state, os.path.join(folder, PROJECTIONS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, PROJECTIONS_NAME)
        if not os.path.isfile(path):
            raise ValueError(f"{resume_from_checkpoint} has no {PROJECTIONS_NAME}: it was not written by SmartBertTrainer.")
        self.projections.load_state_dict(load_file(path, device=str(self.args.device)))
