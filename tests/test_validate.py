"""Validation of exports against PyTorch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from acceleron.errors import ValidationError
from acceleron.plugins import PluginManager
from acceleron.tasks import get_task
from acceleron.validate import OutputReport, ValidationReport, compare_outputs

Install = Callable[..., PluginManager]
CLASSIFY = get_task("text-classification")


def test_identical_outputs_pass() -> None:
    logits = torch.tensor([[0.1, 0.9], [2.0, -1.0]])
    report = compare_outputs({"logits": logits}, {"logits": logits.clone()}, CLASSIFY)
    assert report.passed
    assert report.outputs[0].max_abs_diff == 0.0 and report.outputs[0].argmax_agreement == 1.0


def test_a_difference_beyond_tolerance_fails() -> None:
    logits = torch.tensor([[0.1, 0.9], [2.0, -1.0]])
    report = compare_outputs({"logits": logits}, {"logits": logits + 1e-3}, CLASSIFY)
    assert not report.passed
    assert "FAILED" in report.summary()
    with pytest.raises(ValidationError, match="max\\|diff\\| 1.00e-03"):
        report.raise_if_failed()


def test_the_summary_folds_a_passing_cache_family_and_names_a_failing_member() -> None:
    def cache(diff: float, bad: str = "") -> list[OutputReport]:
        return [
            OutputReport(f"decode.present.{layer}.{kind}", [1], [1], diff * (layer + 1), not (bad and layer == 2))
            for layer in range(3)
            for kind in ("key", "value")
        ]

    logits = OutputReport("decode.logits", [1, 2], [1, 2], 1e-5, True, argmax_agreement=1.0)
    folded = ValidationReport(True, "float32", 1e-4, 1e-4, [logits, *cache(1e-6)]).summary()
    assert "decode.present.* (6): max|diff| 3.00e-06 (decode.present.2.key)" in folded
    assert "decode.logits: max|diff| 1.00e-05, argmax agreement 100.0%" in folded
    assert "present.0" not in folded
    failing = ValidationReport(False, "float32", 1e-4, 1e-4, [logits, *cache(1e-6, bad="yes")]).summary()
    assert "FAILED" in failing and "decode.present.0.key" in failing and "decode.present.2.value" in failing


def test_a_difference_within_tolerance_passes() -> None:
    logits = torch.tensor([[0.1, 0.9], [2.0, -1.0]])
    assert compare_outputs({"logits": logits}, {"logits": logits + 5e-5}, CLASSIFY).passed


def test_a_shape_mismatch_fails() -> None:
    report = compare_outputs({"logits": torch.zeros(2, 2)}, {"logits": torch.zeros(2, 3)}, CLASSIFY)
    assert not report.passed and report.outputs[0].problem == "shape mismatch"


def test_a_missing_output_fails() -> None:
    report = compare_outputs({"logits": torch.zeros(2, 2)}, {}, CLASSIFY)
    assert not report.passed and report.outputs[0].problem == "missing"


def test_non_finite_outputs_fail_in_any_precision() -> None:
    bad = torch.tensor([[float("nan"), 1.0]])
    assert not compare_outputs({"logits": torch.zeros(1, 2)}, {"logits": bad}, CLASSIFY, "bfloat16").passed


def test_reduced_precision_is_judged_on_label_agreement() -> None:
    reference = torch.tensor([[0.0, 3.0], [3.0, 0.0]])
    assert compare_outputs({"logits": reference}, {"logits": reference + 0.4}, CLASSIFY, "int8").passed
    flipped = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
    assert not compare_outputs({"logits": reference}, {"logits": flipped}, CLASSIFY, "int8").passed


def test_int4_labels_are_reported_not_enforced() -> None:
    reference = torch.tensor([[0.0, 3.0], [3.0, 0.0]])
    flipped = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
    report = compare_outputs({"logits": reference}, {"logits": flipped}, CLASSIFY, "int4")
    assert report.passed and report.outputs[0].argmax_agreement == 0.0
    bad = torch.tensor([[float("nan"), 1.0], [0.0, 1.0]])
    assert not compare_outputs({"logits": reference}, {"logits": bad}, CLASSIFY, "int4").passed


def test_a_wrong_export_is_recorded_and_strict_raises(use_plugins: Install, tiny_classifier: Path) -> None:
    from acceleron import OptimizedModel
    from acceleron.cache import ExportCache

    noisy = use_plugins(noisy="noisy").get("noisy")
    with pytest.raises(ValidationError, match="validation FAILED"):
        OptimizedModel.from_pretrained(tiny_classifier, accelerator=noisy, strict=True)
    assert list(ExportCache().entries()) == []  # a strict failure caches nothing
    model = OptimizedModel.from_pretrained(tiny_classifier, accelerator=noisy)  # kept, with the failure recorded
    assert model.manifest["validation"]["passed"] is False
    with pytest.raises(ValidationError):  # the cached failure still fails a strict load
        OptimizedModel.from_pretrained(tiny_classifier, accelerator=noisy, strict=True)
