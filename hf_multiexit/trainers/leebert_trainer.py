"""LeeBERT training (Zhu, "LeeBERT: Learned Early Exit for BERT with cross-level optimization", ACL 2021).

No code was released; this is the reconstruction of `ALGORITHMS.md`, with every choice configurable in `LeeBertConfig`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..losses import mutual_distillation_pairs, mutual_distillation_terms, task_loss
from .base import MultiExitTrainer, register_method, split_dataset
from .leebert_config import LeeBertConfig

LEARNED_WEIGHTS_KEY = "leebert_loss_weights"
"""`config.json` entry holding the learned loss-term weights of a LeeBERT-trained model."""


@contextlib.contextmanager
def full_precision(model: torch.nn.Module, device_type: str):
    """Runs `model` in its parameters' dtype inside the block, with autocast off, also where `Accelerator.prepare`
    wrapped its forward in autocast for bf16/fp16 mixed precision. accelerate has no public way to switch that wrapper
    off for a while (it re-enters autocast inside a surrounding `torch.autocast(enabled=False)`, and
    `unwrap_model(keep_fp32_wrapper=False)` removes it for good), so the forward it wrapped, which it keeps as
    `_original_forward` and which that removal restores, stands in for it until the block ends."""
    wrapped = model.__dict__.get("forward")
    unwrapped = model.__dict__.get("_original_forward")
    if unwrapped is not None:
        model.forward = unwrapped
    try:
        with torch.autocast(device_type, enabled=False):
            yield
    finally:
        if unwrapped is not None:
            model.forward = wrapped


@dataclass(frozen=True)
class WeightNormalization:
    """`weights(a)`: learnable logits to weights summing to 1; `logits(w)`: logits whose weights are `w`."""

    weights: Callable[[torch.Tensor], torch.Tensor]
    logits: Callable[[torch.Tensor], torch.Tensor]


def _sigmoid_weights(logits: torch.Tensor) -> torch.Tensor:
    gates = torch.sigmoid(logits)
    return gates / gates.sum()


WEIGHT_NORMALIZATIONS: dict[str, WeightNormalization] = {
    "softmax": WeightNormalization(lambda a: torch.softmax(a, dim=-1), lambda w: torch.log(w.clamp_min(1e-12))),
    # Gates proportional to w and at most 1/2, away from the sigmoid's flat tails.
    "sigmoid": WeightNormalization(_sigmoid_weights, lambda w: torch.logit(w.clamp_min(1e-12) / (2 * w.max()))),
}


class LossWeights(torch.nn.Module):
    """The weights `w` of the `M^2` terms of `mutual_distillation_terms` (M cross-entropies, then the distillation
    pairs of `mutual_distillation_pairs`) as a function of learnable logits `a`:

    - `"all"` (the reconstruction of earlier versions): one logit per term, `w = norm(a)` over all `M^2` terms, so the
      label terms can lose mass to distillation without bound (only `sum w = 1` holds).
    - `"joint"`: the label terms keep fixed PABEE weights `c_m = l_m / sum_k l_k` (`l_m` the exit's layer; the final
      exit gets what a joint method gives it), and only the distillation weights are learned, one logit per pair whose
      teacher is deeper than its student (an exit never distils from a weaker one), normalised among themselves:
      `w_kd = beta * norm(a)`, `beta = distillation_weight`. The constraint: label weights fixed, distillation weights
      summing to `beta`; learning can only move weight between distillation pairs.
    """

    def __init__(self, exit_layers, scheme: str, normalization: WeightNormalization, distillation_share: float,
                 distillation_weight: float):
        super().__init__()
        num_exits = len(exit_layers)
        pairs = mutual_distillation_pairs(num_exits)
        self.scheme, self.normalization, self.num_terms = scheme, normalization, num_exits + len(pairs)
        if scheme == "all":
            initial = normalization.logits(initial_loss_weights(num_exits, distillation_share))
            self.register_buffer("label_weights", torch.zeros(0))
            self.register_buffer("learned", torch.arange(self.num_terms))
        else:
            layers = torch.tensor([float(layer) for layer in exit_layers])
            self.register_buffer("label_weights", layers / layers.sum())
            downward = [num_exits + k for k, (m, n) in enumerate(pairs) if n > m]
            self.register_buffer("learned", torch.tensor(downward, dtype=torch.long))
            initial = torch.zeros(len(downward))  # uniform over the downward pairs
        self.distillation_weight = distillation_weight
        self.logits = torch.nn.Parameter(initial)

    def forward(self) -> torch.Tensor:
        learned = self.normalization.weights(self.logits) if self.logits.numel() else self.logits
        weights = torch.zeros(self.num_terms, dtype=self.logits.dtype, device=self.logits.device)
        if self.scheme == "all":
            return weights.index_copy(0, self.learned, learned)
        weights = weights.index_copy(0, self.learned, self.distillation_weight * learned)
        return torch.cat([self.label_weights.to(weights.dtype), weights[len(self.label_weights):]])


def initial_loss_weights(num_exits: int, distillation_share: float) -> torch.Tensor:
    """Weights of the `M^2` terms of `mutual_distillation_terms` at the start: the `M` cross-entropy terms share
    `1 - distillation_share` equally, the `M(M-1)` distillation terms `distillation_share`."""
    if num_exits == 1:
        return torch.ones(1)
    pairs = num_exits * (num_exits - 1)
    return torch.tensor([(1 - distillation_share) / num_exits] * num_exits + [distillation_share / pairs] * pairs)


def adam_preconditioner(optimizer, params, gradients: list[torch.Tensor]) -> list[torch.Tensor]:
    """Adam's diagonal preconditioner for this step, `P = 1 / (sqrt(v_hat) + eps)`, with the second moment the
    optimizer will hold after it, `v_hat = (beta2 v + (1 - beta2) g^2) / (1 - beta2^(t + 1))` (`v`, `t` from its state;
    `v = 0`, `t = 0` before its first step, where `P g` is Adam's first step `g / (|g| + eps)`). Adam's real update
    is `lr * P m_hat`; its momentum is left out of the virtual step, as the part of `m_hat` that depends on this step's
    loss weights is `(1 - beta1) g`, a constant factor that `xi` absorbs."""
    groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    preconditioner = []
    for p, g in zip(params, gradients):
        group = groups[id(p)]
        beta2, eps = group["betas"][1], group["eps"]
        state = optimizer.state.get(p, {})
        step = float(state["step"]) if "step" in state else 0.0
        second = (1 - beta2) * g.float() ** 2
        if "exp_avg_sq" in state:
            second = second + beta2 * state["exp_avg_sq"].float()
        preconditioner.append((1 / ((second / (1 - beta2 ** (step + 1))).sqrt() + eps)).to(g.dtype))
    return preconditioner


@register_method("leebert", LeeBertConfig)
class LeeBertTrainer(MultiExitTrainer):
    """Mutual distillation between all exits with learned loss-term weights (LeeBERT):

        L(theta, a) = sum_m w_m CE(z_m, y) + sum_{m != n} w_{m,n} T^2 KL(sg(p_n^T) || p_m^T),   w = LossWeights(a)

    - Weights (`LossWeights`, `weight_scheme`): by default (`"joint"`) the label terms keep PABEE's fixed weights
      `w_m = l_m / sum_k l_k` and learnable logits give the distillation pairs whose teacher is deeper than the
      student `w_{m,n} = beta * norm(a)_{m,n}` (`beta = distillation_weight`), so the final exit has the label weight
      a joint method gives it at any depth and learning moves weight only between distillation pairs. `"all"` (the
      earlier reconstruction) normalises one logit per term over all `M^2` terms, starting with `distillation_share`
      of the mass on distillation; there the single-level gradient, which favours the smallest terms, drifts mass
      from the labels to distillation without bound. `norm` = softmax (default) or normalised sigmoid
      (`weight_normalization`), so the learned weights cannot collapse to zero. They are a trainer module
      (`add_trainer_module`: their own optimizer group at `weight_learning_rate` without weight decay, stored in
      every checkpoint, from which a resumed run restores them), are logged as `loss_weight_ce_<m>` /
      `loss_weight_kd_<m>_<n>` (student m, teacher n), and are saved in the model's `config.json` under
      `leebert_loss_weights`.
    - Cross-level optimisation (CLO): the training set is split into D1 and D2 (`bilevel_split` of it held out as
      D2, seeded); theta steps on D1 with the usual optimizer. The logits `a` step on
      `lambda * grad_a L_D1(theta, a) + (1 - lambda) * g_bi`, `lambda = clo_mix`, where `g_bi` is the one-step
      unrolled bi-level gradient of the D2 loss, computed as in DARTS (Liu et al., ICLR 2019) with a finite
      difference:

          theta' = theta - xi P grad_theta L_D1(theta, a),   u = P grad_theta' L_D2(theta'),
          g_bi = -xi [grad_a L_D1(theta + eps u, a) - grad_a L_D1(theta - eps u, a)] / (2 eps),  eps = r / ||u||

      The outer loss `L_D2` is the unweighted mean of all exits' CE: it does not depend on `a` (otherwise the
      weights would simply pick the smallest terms), so the direct term of DARTS' gradient vanishes. `xi` is the
      model's current learning rate (`unroll_learning_rate` overrides it). The virtual step has the scale of the step
      the optimizer really takes (`unroll_step="auto"`, default: `"adam"` for an Adam-family optimizer, `"sgd"` for
      others): `P = 1 / (sqrt(v_hat) + eps)` is Adam's diagonal preconditioner from the optimizer's state
      (`adam_preconditioner`), held constant in `a`. DARTS' plain SGD step (`"sgd"`, `P = 1`) is about
      `1 / sqrt(v_hat)` (~1e3 in fine-tuning) shorter than Adam's, which left the bi-level part ~1e-5 of the
      single-level part of `a`'s gradient: cross-level optimisation was single-level learning with a hold-out. The
      mean norms of both parts are logged (`clo_single_grad_norm`, `clo_bilevel_grad_norm`).
      The D2 loss and the two D1 evaluations at `theta +- eps u` run without dropout, so the finite difference
      measures the network and not two different dropout masks, and in full precision also under bf16/fp16 mixed
      precision, so it does not measure the rounding of the weights either (`bilevel_gradient`);
      `grad_a L_D1(theta +- eps u, a) = J_w(a)^T terms(theta +- eps u)` needs only forward passes. Because the
      model's gradient treats every teacher as a constant (`sg`), the teachers' logits in those two evaluations stay
      at `theta`: the difference is then the derivative of the update the optimizer really takes (perturbing the
      teachers too would add a term the update does not contain). Per optimizer step CLO costs one extra forward +
      backward on a D2 batch and three forwards on the D1 batch.
      `clo_mix = 1` is single-level optimisation (no split). The D2 batches follow the global step, so a resumed
      run continues them.

    Inference uses PABEE's patience exit (`patience`).
    """

    args: LeeBertConfig

    def __init__(self, model=None, args: LeeBertConfig | None = None, train_dataset=None, **kwargs):
        super().__init__(model=model, args=args, train_dataset=train_dataset, **kwargs)
        self.bilevel_dataset = None
        if self.args.clo_mix < 1 and train_dataset is not None:
            self.train_dataset, self.bilevel_dataset = split_dataset(
                train_dataset, self.args.bilevel_split, self.args.seed
            )
        self._bilevel_data = None
        self._bilevel_step, self._bilevel_micro = -1, 0
        self._weight_grad_norms = torch.zeros(2)
        self._weight_grad_steps = 0

    def setup_model(self) -> None:
        """Names the `M^2` loss terms of the model's exits and starts their weights (`distillation_share`)."""
        super().setup_model()
        layers = self.exit_layers
        self.term_names = [f"ce_{layer}" for layer in layers] + [
            f"kd_{layers[m]}_{layers[n]}" for m, n in mutual_distillation_pairs(len(layers))
        ]
        self.weight_model = LossWeights(
            layers, self.args.weight_scheme, WEIGHT_NORMALIZATIONS[self.args.weight_normalization],
            self.args.distillation_share, self.args.distillation_weight,
)
        self.add_trainer_module("loss_weights", self.weight_model, learning_rate=self.args.weight_learning_rate,
                                weight_decay=0.0)
        self.loss_weight_logits = self.weight_model.logits

    # ----------------------------------------------------------------------------------------------- objective
    def loss_weights(self) -> torch.Tensor:
        """The current weights `w` of the `M^2` loss terms (named in `term_names`; `LossWeights`)."""
        return self.weight_model()

    def objective(self, outputs, labels):
        terms = mutual_distillation_terms(outputs.all_logits, labels, self.problem_type, self.args.temperature)
        # A product and a sum, not a matrix product, which autocast would run in half precision.
        return {"weighted": (terms * self.trainer_module("loss_weights")().to(terms.dtype)).sum(-1)}

    def outer_loss(self, model, inputs: dict[str, Any]) -> torch.Tensor:
        """The bi-level outer objective on a D2 batch: the mean over exits of each exit's mean CE."""
        labels = inputs["labels"]
        outputs = self.model_outputs(model, inputs)
        return torch.stack([task_loss(z, labels, self.problem_type).mean() for z in outputs.all_logits]).mean()

    # ----------------------------------------------------------------------------------------------- optimisation
    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        optimizer = super().create_optimizer(model)
        adam_family = all("betas" in group and "eps" in group for group in optimizer.param_groups)
        if self.args.unroll_step == "adam" and not adam_family:
            optim = getattr(self.args.optim, "value", self.args.optim)
            raise ValueError(f"unroll_step='adam' needs an Adam-family optimizer (param groups with 'betas'); "
                             f"optim={optim!r} has none. Use unroll_step='auto' or 'sgd'.")
        self._adam_virtual_step = self.args.unroll_step == "adam" or (self.args.unroll_step == "auto" and adam_family)
        return optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):
        """The ordinary step on the D1 batch (its backward also gives the single-level gradient of `a`), then, with
        CLO, the bi-level gradient on a D2 batch, mixed into `a`'s gradient. Both parts are this micro-batch's share,
        so gradient accumulation sums them like the model's gradients."""
        weights = self.loss_weight_logits
        if self.bilevel_dataset is None:
            return super().training_step(model, inputs, num_items_in_batch)
        params = [p for p in self.accelerator.unwrap_model(model).parameters() if p.requires_grad]
        before = [None if p.grad is None else p.grad.clone() for p in params]
        weights_before = torch.zeros_like(weights) if weights.grad is None else weights.grad.clone()
        loss = super().training_step(model, inputs, num_items_in_batch)
        # What backward added is `1 / share` of the micro-batch's mean gradient (the virtual step's direction).
        labels = inputs["labels"]
        fraction = float(self.reduce(torch.ones(len(labels), device=labels.device), labels, num_items_in_batch))
        share = 1 / fraction if num_items_in_batch is not None else self.current_gradient_accumulation_steps
        # DDP averages the accumulated gradients over processes at the optimizer step's last micro-batch only
        # (`no_sync` before): there the gradients from before it are averaged too, at the others the difference is,
        # so that every process takes the virtual step of the micro-batch of all processes together.
        synced = self.accelerator.sync_gradients
        if synced:
            before = [b if b is None else self._process_mean(b) for b in before]
        # Under fp16 the gradients are scaled until the optimizer step: the virtual step needs them unscaled, and the
        # bi-level gradient (of the unscaled D2 loss) joins `a`'s scaled gradient scaled.
        scale = self.gradient_scale()
        train_gradient = [
            (torch.zeros_like(p) if p.grad is None else p.grad if b is None else p.grad - b) * (share / scale)
            for p, b in zip(params, before)
        ]
        if not synced:
            train_gradient = [self._process_mean(g) for g in train_gradient]
        single = weights.grad - weights_before
        xi = self.args.unroll_learning_rate or self.lr_scheduler.get_last_lr()[0]
        preconditioner = (
            adam_preconditioner(self.optimizer, params, train_gradient) if self._adam_virtual_step else None
        )
        bilevel = self.bilevel_gradient(
            model, self._prepare_inputs(inputs), self._prepare_inputs(self._next_bilevel_batch()), train_gradient, xi,
            preconditioner,
        ) / share
        # The weights' DDP wrapper averaged `single` in backward (and `weights_before`, so the same on every process);
        # the bi-level part is taken outside backward, on this process's D1 batch, and averaged here.
        bilevel = self._process_mean(bilevel)
        mix = self.args.clo_mix
        weights.grad = weights_before + mix * single + (1 - mix) * scale * bilevel
        self._weight_grad_norms += torch.stack([single.norm() / scale, bilevel.norm()]).detach().cpu() * share
        self._weight_grad_steps += 1
        return loss

    def bilevel_gradient(
        self, model, d1_inputs: dict, d2_inputs: dict, train_gradient: list[torch.Tensor], xi: float,
        preconditioner: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """DARTS' finite-difference estimate of `d/da L_D2(theta - xi * P train_gradient(a))`, where
        `train_gradient = grad_theta L_D1(theta, a)` on `d1_inputs` for the trainable parameters (in order) and `P` a
        diagonal `preconditioner` held constant (None: the identity, an SGD step). Its derivative is
        `-xi (d train_gradient / da)^T P v`, `v = grad L_D2(theta')`, so the finite difference runs along `P v`.

        It runs in full precision, also under bf16/fp16 mixed precision (`full_precision`): the finite difference
        subtracts two forward passes whose weights differ by a step of length `finite_difference_eps` spread over all
        parameters, far below the rounding of the weights to bf16 (8 significant bits) or fp16 (11), which would leave
        mostly rounding noise. That also keeps the unscaled D2 gradient `v` clear of fp16 underflow.

        On several processes `d2_inputs` is this process's share of the step's D2 batch and `train_gradient` the
        gradient of all processes' D1 batches: `v` is the gradient of the D2 loss of the whole D2 batch (summed over
        processes, each share weighted by its size), so `theta'`, `v` and the radius are the same on every process,
        and the difference on this process's D1 batch is averaged over processes with `a`'s other gradient, as DDP
        averages the model's."""
        net = self.accelerator.unwrap_model(model)
        params = [p for p in net.parameters() if p.requires_grad]
        original = [p.detach().clone() for p in params]
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad(), full_precision(net, self.args.device.type):
                # The update differentiates the students only (teachers detached), so the teachers stay at theta.
                teachers = self.model_outputs(net, d1_inputs).all_logits
                if preconditioner is not None:
                    train_gradient = [c * g for c, g in zip(preconditioner, train_gradient)]
                for p, g in zip(params, train_gradient):
                    p.sub_(xi * g)
            with full_precision(net, self.args.device.type):
                outer = self.outer_loss(net, d2_inputs)
            v = torch.autograd.grad(outer, params, allow_unused=True)
            count = len(d2_inputs["labels"])
            share = count / self._process_mean(torch.tensor(float(count), device=outer.device))
            v = [self._process_mean(share * (torch.zeros_like(p) if g is None else g)) for p, g in zip(params, v)]
            if preconditioner is not None:
                v = [c * g for c, g in zip(preconditioner, v)]
            norm = torch.sqrt(sum((g.float() ** 2).sum() for g in v))
            radius = self.args.finite_difference_eps / norm.clamp_min(torch.finfo(norm.dtype).tiny)
            mean_terms = []
            with torch.no_grad(), full_precision(net, self.args.device.type):
                for sign in (1.0, -1.0):
                    for p, p0, g in zip(params, original, v):
                        p.copy_(p0 + sign * radius * g)
                    outputs = self.model_outputs(net, d1_inputs)
                    terms = mutual_distillation_terms(
                        outputs.all_logits, d1_inputs["labels"], self.problem_type, self.args.temperature, teachers
                    )
                    mean_terms.append(terms.mean(0))
        finally:
            with torch.no_grad():
                for p, p0 in zip(params, original):
                    p.copy_(p0)
            net.train(was_training)
        # grad_a L_D1(theta', a) = J_w(a)^T terms(theta'): the difference needs no backward through the network.
        difference = (mean_terms[0] - mean_terms[1]) / (2 * radius)
        weighted = self.loss_weights() @ difference.to(self.loss_weight_logits.dtype)
        return -xi * torch.autograd.grad(weighted, self.loss_weight_logits)[0]

    def _next_bilevel_batch(self) -> dict[str, Any]:
        """This process's share of D2 batch number `k = global_step * gradient_accumulation_steps + micro-batch`,
        taken from a seeded shuffle of D2 per pass: a function of `k` alone, so a resumed run draws the same D2
        batches as an uninterrupted one. A D2 batch has `per_device_train_batch_size x processes` samples, split
        evenly between the processes like the training batch, so N processes together draw the D2 batch of one
        process with N times the batch; a pass's last batch is left out when it cannot give every process a sample."""
        if self._bilevel_data is None:
            dataset, collator = self.bilevel_dataset, self.data_collator
            if hasattr(dataset, "column_names"):
                dataset = self._remove_unused_columns(dataset, description="bilevel (D2)")
            else:
                collator = self._get_collator_with_removed_columns(collator, description="bilevel (D2)")
            self._bilevel_data = (dataset, collator)
        dataset, collator = self._bilevel_data
        step = self.state.global_step
        self._bilevel_micro = self._bilevel_micro + 1 if step == self._bilevel_step else 0
        self._bilevel_step = step
        position = step * self.args.gradient_accumulation_steps + self._bilevel_micro
        processes = self.accelerator.num_processes
        size, batch = len(dataset), self._train_batch_size * processes
        if size < processes:
            raise ValueError(f"D2 has {size} example(s), fewer than the {processes} processes that share its batches; "
                             "raise bilevel_split.")
        passes, offset = divmod(position, size // batch + (size % batch >= processes))
        order = torch.randperm(size, generator=torch.Generator().manual_seed(self.args.seed + passes))
        shares = order[offset * batch : (offset + 1) * batch].tensor_split(processes)
        return collator([dataset[i] for i in shares[self.accelerator.process_index].tolist()])

    def _process_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` averaged over the processes (itself on one)."""
        if self.accelerator.num_processes == 1:
            return tensor
        tensor = tensor.clone()
        torch.distributed.all_reduce(tensor)
        return tensor / self.accelerator.num_processes

    # ----------------------------------------------------------------------------------------------- log and save
    def learned_weights(self) -> dict[str, Any]:
        """What is saved in `config.json` (`leebert_loss_weights`): the normalisation, logits and named weights."""
        weights = self.loss_weights().detach().cpu().tolist()
        return {
            "scheme": self.args.weight_scheme,
            "normalization": self.args.weight_normalization,
            "logits": self.loss_weight_logits.detach().cpu().tolist(),
            "weights": dict(zip(self.term_names, weights)),
        }

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:
            weights = self.loss_weights().detach().cpu().tolist()
            logs.update({f"loss_weight_{name}": round(w, 5) for name, w in zip(self.term_names, weights)})
            if self._weight_grad_steps:
                single, bilevel = (self._weight_grad_norms / self._weight_grad_steps).tolist()
                logs.update(clo_single_grad_norm=single, clo_bilevel_grad_norm=bilevel)
                self._weight_grad_norms, self._weight_grad_steps = torch.zeros(2), 0
        super().log(logs, *args, **kwargs)

    def store_learned_weights(self) -> None:
        setattr(self.accelerator.unwrap_model(self.model).config, LEARNED_WEIGHTS_KEY, self.learned_weights())

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:
            self.store_learned_weights()

    def trainer_modules_metadata(self) -> dict[str, str]:
        return {**super().trainer_modules_metadata(), "weight_scheme": self.args.weight_scheme,
                "weight_normalization": self.args.weight_normalization}
