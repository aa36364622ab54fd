"""The objectives' losses as pure functions, against values computed by hand."""

import math

import pytest
import torch

from hf_multiexit.losses import (
    chained_distillation_loss,
    distillation_loss,
    mutual_distillation_pairs,
    mutual_distillation_terms,
    project_conflicting,
    task_loss,
    weighted_exit_loss,
)


def test_task_loss_per_sample():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    labels = torch.tensor([0, 1])
    expected = [math.log(1 + math.exp(-2.0)), math.log(2.0)]
    torch.testing.assert_close(task_loss(logits, labels, "single_label_classification"), torch.tensor(expected))
    torch.testing.assert_close(
        task_loss(torch.tensor([[1.5], [0.0]]), torch.tensor([0.5, 2.0]), "regression"), torch.tensor([1.0, 4.0])
    )
    bce = task_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]), "multi_label_classification")
    torch.testing.assert_close(bce, torch.tensor([math.log(2.0)]))


def test_weighted_exit_loss_is_pabee():
    labels = torch.tensor([0])
    exits = [torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])]
    ce = [math.log(2.0), math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(2.0))]
    expected = (1 * ce[0] + 2 * ce[1] + 3 * ce[2]) / 6
    got = weighted_exit_loss(exits, labels, "single_label_classification", [1.0, 2.0, 3.0])
    torch.testing.assert_close(got, torch.tensor([expected]))
    with pytest.raises(ValueError, match="2 exit weights for 3 exits"):
        weighted_exit_loss(exits, labels, "single_label_classification", [1.0, 2.0])


def test_distillation_loss_matches_hand_computed_kl():
    student = torch.tensor([[1.0, 0.0, -1.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 3.0, 0.0]], requires_grad=True)
    t = 2.0
    p_t = torch.softmax(teacher.detach() / t, -1)[0].tolist()
    p_s = torch.softmax(student.detach() / t, -1)[0].tolist()
    kl = sum(a * (math.log(a) - math.log(b)) for a, b in zip(p_t, p_s))
    got = distillation_loss(student, teacher, t, "single_label_classification")
    torch.testing.assert_close(got, torch.tensor([t * t * kl]))
    released = distillation_loss(student, teacher, t, "single_label_classification", reduction="released")
    torch.testing.assert_close(released, torch.tensor([t * t * kl / 3]))
    got.sum().backward()
    assert teacher.grad is None and student.grad is not None  # the teacher is detached
    reg = distillation_loss(torch.tensor([[1.0]]), torch.tensor([[3.0]]), t, "regression")
    torch.testing.assert_close(reg, torch.tensor([4.0]))
    with pytest.raises(ValueError, match=r"reduction='sum' is not one of \['batchmean', 'released'\]"):
        distillation_loss(student, teacher, t, "single_label_classification", reduction="sum")


def test_projection_removes_only_the_conflicting_component():
    g_a = torch.tensor([1.0, 0.0])
    torch.testing.assert_close(project_conflicting(torch.tensor([-1.0, 2.0]), g_a), torch.tensor([0.0, 2.0]))
    agreeing = torch.tensor([1.0, 2.0])
    assert torch.equal(project_conflicting(agreeing, g_a), agreeing)
    g_a = torch.tensor([3.0, 4.0])
    g_b = torch.tensor([-3.0, 1.0])
    projected = project_conflicting(g_b, g_a)
    expected = g_b - (-9.0 + 4.0) / 25.0 * g_a
    torch.testing.assert_close(projected, expected)
    assert abs(float(torch.dot(projected, g_a))) < 1e-6


def _kl(teacher, student, t):
    p_t = torch.softmax(torch.tensor(teacher) / t, -1).tolist()
    p_s = torch.softmax(torch.tensor(student) / t, -1).tolist()
    return t * t * sum(a * (math.log(a) - math.log(b)) for a, b in zip(p_t, p_s))


def _ce(logits, label):
    return math.log(sum(math.exp(v) for v in logits)) - logits[label]


def test_mutual_distillation_terms_are_every_ce_then_every_ordered_pair():
    exits = [[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]]
    labels = torch.tensor([1])
    terms = mutual_distillation_terms([torch.tensor([z]) for z in exits], labels, "single_label_classification", 2.0)
    assert mutual_distillation_pairs(3) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    expected = [_ce(z, 1) for z in exits] + [_kl(exits[n], exits[m], 2.0) for m, n in mutual_distillation_pairs(3)]
    torch.testing.assert_close(terms, torch.tensor([expected]))
    logits = [torch.tensor([z], requires_grad=True) for z in exits]
    mutual_distillation_terms(logits, labels, "single_label_classification", 2.0)[:, 5].sum().backward()
    # Column 5 is kd(student 1 <- teacher 0): only the student gets gradient.
    assert not logits[0].grad.any() and not logits[2].grad.any() and logits[1].grad.any()


def test_chained_distillation_loss_layerwise_and_last_layer():
    exits = [[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]]
    labels = torch.tensor([0])
    logits = [torch.tensor([z]) for z in exits]
    gamma, t = 0.25, 3.0
    for teachers in ([1, 2], [2, 2]):
        got = chained_distillation_loss(logits, labels, "single_label_classification", teachers, gamma, t)
        expected = _ce(exits[2], 0) + sum(
            (1 - gamma) * _ce(exits[i], 0) + gamma * _kl(exits[teachers[i]], exits[i], t) for i in range(2)
        )
        torch.testing.assert_close(got, torch.tensor([expected]))
    with pytest.raises(ValueError, match="1 teachers for 2 intermediate exits"):
        chained_distillation_loss(logits, labels, "single_label_classification", [2], gamma, t)

