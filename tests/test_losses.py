"""The objectives' losses as pure functions, against values computed by hand."""

import math

import pytest
import torch

from hf_multiexit.losses import distillation_loss, project_conflicting, task_loss, weighted_exit_loss


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
