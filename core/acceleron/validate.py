"""Comparing an exported model's outputs with the PyTorch original.

The check is per output: shapes must match and ``|candidate - reference| <= atol + rtol * |reference|``
everywhere. For classifier tasks the argmax agreement over the last axis is reported too, and in
float32 it must be total. Tolerances depend on the precision the backend computes in.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from acceleron.errors import ValidationError

if TYPE_CHECKING:
    import torch

    from acceleron.tasks import TaskSpec


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    #: Minimum share of rows whose argmax agrees (classifier tasks).
    min_agreement: float


TOLERANCES: dict[str, Tolerance] = {
    "float32": Tolerance(atol=1e-4, rtol=1e-4, min_agreement=1.0),
    # Reduced precisions are checked for sanity here; their accuracy is measured on real data.
    "bfloat16": Tolerance(atol=0.15, rtol=0.1, min_agreement=0.5),
    "float16": Tolerance(atol=0.05, rtol=0.05, min_agreement=0.5),
    "int8": Tolerance(atol=1.0, rtol=0.5, min_agreement=0.5),
}


#: Generative float32: logits of a deep decoder drift more between runtimes than an encoder's
#: (SmolLM2-135M, 30 layers, logits up to about 30: max |diff| 2.4e-4 on ONNX Runtime, argmax identical).
#: Greedy generation being token-identical is the conformance suite's stronger check.
GENERATIVE_FLOAT32 = Tolerance(atol=1e-3, rtol=1e-4, min_agreement=1.0)


def tolerance_for(task: TaskSpec, dtype: str) -> Tolerance:
    """The tolerance for a task computed in ``dtype``."""
    if task.generative and dtype == "float32":
        return GENERATIVE_FLOAT32
    return TOLERANCES.get(dtype, TOLERANCES["float32"])


@dataclass(frozen=True)
class OutputReport:
    name: str
    shape: list[int]
    reference_shape: list[int]
    max_abs_diff: float
    passed: bool
    argmax_agreement: float | None = None
    problem: str = ""


@dataclass(frozen=True)
class ValidationReport:
    """The result of comparing a backend's outputs with PyTorch's, stored in the manifest."""

    passed: bool
    dtype: str
    atol: float
    rtol: float
    outputs: list[OutputReport] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.error:
            return f"validation failed: {self.error}"
        parts = []
        for output in self.outputs:
            text = f"{output.name}: max|diff| {output.max_abs_diff:.2e}"
            if output.argmax_agreement is not None:
                text += f", argmax agreement {output.argmax_agreement:.1%}"
            if output.problem:
                text += f" ({output.problem})"
            parts.append(text)
        verdict = "passed" if self.passed else "FAILED"
        return f"validation {verdict} in {self.dtype} (atol {self.atol:g}, rtol {self.rtol:g}): " + "; ".join(parts)

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise ValidationError(
                self.summary() + ". The export does not reproduce PyTorch; report it, or pass strict=False "
                "to use it anyway."
            )


def compare_outputs(
    reference: Mapping[str, torch.Tensor],
    candidate: Mapping[str, torch.Tensor],
    task: TaskSpec,
    dtype: str = "float32",
    names: Sequence[str] | None = None,
) -> ValidationReport:
    """Compare ``candidate`` outputs with ``reference`` for every output of ``task`` (or ``names``)."""
    import torch

    started = time.perf_counter()
    tolerance = tolerance_for(task, dtype)
    reports: list[OutputReport] = []
    for name in names if names is not None else task.output_names:
        expected = reference.get(name)
        actual = candidate.get(name)
        if expected is None:
            continue
        if actual is None:
            reports.append(OutputReport(name, [], list(expected.shape), float("inf"), False, problem="missing"))
            continue
        expected_f = expected.detach().float().cpu()
        actual_f = torch.as_tensor(actual).detach().float().cpu()
        if actual_f.shape != expected_f.shape:
            reports.append(
                OutputReport(
                    name,
                    list(actual_f.shape),
                    list(expected_f.shape),
                    float("inf"),
                    False,
                    problem="shape mismatch",
                )
            )
            continue
        diff = (actual_f - expected_f).abs()
        max_diff = float(diff.max()) if diff.numel() else 0.0
        finite = bool(torch.isfinite(actual_f).all())
        within = finite and bool((diff <= tolerance.atol + tolerance.rtol * expected_f.abs()).all())
        agreement = None
        if task.classifier and expected_f.numel():
            agreement = float((actual_f.argmax(-1) == expected_f.argmax(-1)).float().mean())
        passed = within and (agreement is None or agreement >= tolerance.min_agreement)
        if dtype != "float32":
            # Reduced precision: elementwise bounds are a sanity check; labels must mostly agree.
            passed = finite and (within or (agreement is not None and agreement >= tolerance.min_agreement))
        problem = "" if finite else "non-finite values"
        reports.append(
            OutputReport(name, list(actual_f.shape), list(expected_f.shape), max_diff, passed, agreement, problem)
        )
    if not reports:
        return ValidationReport(
            False,
            dtype,
            tolerance.atol,
            tolerance.rtol,
            error=f"the reference has none of {task.output_names}",
        )
    return ValidationReport(
        passed=all(r.passed for r in reports),
        dtype=dtype,
        atol=tolerance.atol,
        rtol=tolerance.rtol,
        outputs=reports,
        seconds=round(time.perf_counter() - started, 4),
    )
