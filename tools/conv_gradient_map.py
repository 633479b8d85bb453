"""Maps where XLA's convolution gradients are wrong or abort, against a NumPy reference.

    python -m tools.conv_gradient_map            # the full scan (minutes), a summary table
    python -m tools.conv_gradient_map --small    # the neighbourhoods of the known failures

Every case is one `lax.conv_general_dilated` (1-3 spatial axes, kernel size, stride, kernel
dilation, input dilation, groups, per-side padding, negative pads included) differentiated by
`jax.vjp` under `jax.jit`, as a training step does. Its value, input gradient and kernel
gradient are compared with a float64 NumPy reference that sums over the kernel's taps
(`y[n] = sum_k x_pad[n S + k D] w[k]`, and the adjoint sums of the same taps), and so is the
same case through `cnn_jax.ops.lowering`'s explicit-padding formulation (the guard's). Cases run
in worker subprocesses, many per worker; a worker announces each case before compiling it, so
when XLA aborts the process (SIGABRT on a failed internal check) the case is recorded as an
abort and a fresh worker goes on with the rest.

Findings (jaxlib 0.10.2, XLA:CPU) are in `docs/conv_gradients.md`; `predicted_failure` is the
rule they give, and `main` checks it against the scan.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import subprocess
import sys
from typing import NamedTuple

import numpy as np

# Relative to the reference's largest magnitude: float32 sums of at most a few hundred terms
# of unit-normal products stay near 1e-6; the failures found are O(1) or garbage.
TOLERANCE = 1e-4
PARTS = ("y", "dx", "dkernel")


class Case(NamedTuple):
  """One convolution: `x: [batch, *spatial, groups * c_in]`, kernel `[*K, c_in, groups * c_out]`.

  Per spatial axis: `spatial`, `kernel`, `stride`, `dilation` (kernel), `input_dilation` and
  `pads` `(lo, hi)`, which may be negative (cropping), as `lax.conv_general_dilated` allows.
  """
  spatial: tuple[int, ...]
  kernel: tuple[int, ...]
  stride: tuple[int, ...]
  dilation: tuple[int, ...]
  input_dilation: tuple[int, ...]
  pads: tuple[tuple[int, int], ...]
  groups: int = 1
  batch: int = 1
  channels_in: int = 1
  channels_out: int = 1

  @classmethod
  def from_json(cls, data) -> "Case":
    fields = {k: tuple(map(tuple, v)) if k == "pads" else tuple(v) if isinstance(v, list) else v
              for k, v in data.items()}
    return cls(**fields)

  def output_size(self) -> tuple[int, ...]:
    """`floor((N_eff + lo + hi - D (K - 1) - 1) / S) + 1` per axis, `N_eff = (N - 1) D_in + 1`."""
    return tuple((((n - 1) * d_in + 1 + lo + hi - d * (k - 1) - 1) // s) + 1
                 for n, k, s, d, d_in, (lo, hi) in zip(self.spatial, self.kernel, self.stride,
                                                       self.dilation, self.input_dilation,
                                                       self.pads))

  def is_valid(self) -> bool:
    return all(o >= 1 for o in self.output_size())


def _padded(x: np.ndarray, case: Case) -> np.ndarray:
  """x with input dilation and the (possibly negative) pads of every spatial axis applied."""
  for axis, (d_in, (lo, hi)) in enumerate(zip(case.input_dilation, case.pads), start=1):
    shape = list(x.shape)
    shape[axis] = (x.shape[axis] - 1) * d_in + 1
    dilated = np.zeros(shape, x.dtype)
    index = [slice(None)] * x.ndim
    index[axis] = slice(None, None, d_in)
    dilated[tuple(index)] = x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (max(lo, 0), max(hi, 0))
    padded = np.pad(dilated, widths)
    index[axis] = slice(max(-lo, 0), padded.shape[axis] - max(-hi, 0))
    x = padded[tuple(index)]
  return x


def _tap_views(case: Case, out_size):
  """For every kernel tap k: (k, the index of `x_pad[n S + k D]` over all output positions n)."""
  for tap in itertools.product(*(range(k) for k in case.kernel)):
    yield tap, (slice(None),) + tuple(
        slice(t * d, t * d + (o - 1) * s + 1, s)
        for t, d, o, s in zip(tap, case.dilation, out_size, case.stride)) + (slice(None),)


def numpy_reference(x, kernel, dy, case: Case):
  """`(y, dx, dkernel)` in float64 by sums over the kernel's taps, independent of XLA.

  `y[b, n, g, o] = sum_{k, c} x_pad[b, n S + k D, g, c] w[k, c, g, o]`; the adjoint adds
  `dy[n] w[k]^T` into `dx_pad[n S + k D]` and `x_pad[n S + k D]^T dy[n]` into `dw[k]`; `dx` is
  read back from `dx_pad` through the same padding and dilation (the adjoint of `_padded`).
  """
  x, kernel, dy = (np.asarray(a, np.float64) for a in (x, kernel, dy))
  g = case.groups
  x_pad = _padded(x, case)
  split = lambda a: a.reshape(a.shape[:-1] + (g, a.shape[-1] // g))
  w = kernel.reshape(kernel.shape[:-1] + (g, kernel.shape[-1] // g))  # [*K, c, g, o]
  out_size = case.output_size()
  y = np.zeros((x.shape[0],) + out_size + (g, kernel.shape[-1] // g))
  dx_pad = np.zeros(split(x_pad).shape)
  dw = np.zeros(w.shape)
  dy_g = split(dy)
  for tap, view in _tap_views(case, out_size):
    x_tap = split(x_pad)[view]  # [b, *O, g, c]
    y += np.einsum("...gc,cgo->...go", x_tap, w[tap])
    dx_pad[view] += np.einsum("...go,cgo->...gc", dy_g, w[tap])
    dw[tap] += np.einsum("ngc,ngo->cgo", x_tap.reshape((-1,) + x_tap.shape[-2:]),
                         dy_g.reshape((-1,) + dy_g.shape[-2:]))
  dx_pad = dx_pad.reshape(x_pad.shape)
  # The adjoint of `_padded`: pad what was cropped, crop what was padded, undo the dilation.
  dx = dx_pad
  for axis, (d_in, (lo, hi)) in enumerate(zip(case.input_dilation, case.pads), start=1):
    widths = [(0, 0)] * dx.ndim
    widths[axis] = (max(-lo, 0), max(-hi, 0))
    dx = np.pad(dx, widths)
    index = [slice(None)] * dx.ndim
    index[axis] = slice(max(lo, 0), dx.shape[axis] - max(hi, 0), d_in)
    dx = dx[tuple(index)]
  return y.reshape(y.shape[:-2] + (-1,)), dx, dw.reshape(kernel.shape)


def _inputs(case: Case, seed: int = 0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((case.batch,) + case.spatial + (case.groups * case.channels_in,))
  kernel = rng.standard_normal(case.kernel + (case.channels_in, case.groups * case.channels_out))
  dy = rng.standard_normal((case.batch,) + case.output_size() + (case.groups * case.channels_out,))
  return x.astype(np.float32), kernel.astype(np.float32), dy.astype(np.float32)


def _errors(actual, expected) -> dict[str, float]:
  """Per part, `max |a - e| / max(1, max |e|)`; NaN where the shapes differ."""
  errors = {}
  for part, a, e in zip(PARTS, actual, expected):
    a = np.asarray(a, np.float64)
    errors[part] = (float(np.max(np.abs(a - e), initial=0.0) / max(1.0, np.max(np.abs(e),
                                                                            initial=0.0)))
                    if a.shape == e.shape else float("nan"))
  return errors


# What the scan differentiates: XLA's convolution and the guard's explicit padding (the map),
# or `cnn_jax.ops.correlate` under each lowering (the guard's test).
FORMULATIONS = ("xla", "explicit")
OPS_FORMULATIONS = ("ops:xla", "ops:tiled", "ops:auto")


def run_case(case: Case, formulation: str) -> dict[str, float] | str:
  """The errors of one formulation on one case, per part of `PARTS`, or "rejected: ...".

  'xla': `lax.conv_general_dilated` with its own padding and input dilation; 'explicit':
  `cnn_jax.ops.lowering.explicitly_padded_correlate` (`lax.pad`, then a 'VALID' convolution);
  'ops:<lowering>': `cnn_jax.ops.correlate(..., lowering=<lowering>)`, which may reject the
  case with a ValueError (its message is returned).
  """
  import jax
  from jax import lax

  from cnn_jax import ops
  from cnn_jax.ops import lowering

  x, kernel, dy = _inputs(case)
  numbers = lowering.channels_last_dimension_numbers(len(case.spatial))

  def forward(x, kernel):
    if formulation == "xla":
      return lax.conv_general_dilated(
          x, kernel, case.stride, case.pads, lhs_dilation=case.input_dilation,
          rhs_dilation=case.dilation, dimension_numbers=numbers, feature_group_count=case.groups)
    if formulation == "explicit":
      return lowering.explicitly_padded_correlate(
          x, kernel, case.stride, case.pads, case.input_dilation, case.dilation, case.groups)
    return ops.correlate(x, kernel, stride=case.stride, padding=case.pads,
                         input_dilation=case.input_dilation, kernel_dilation=case.dilation,
                         groups=case.groups, lowering=formulation.removeprefix("ops:"))

  def values_and_gradients(x, kernel, dy):
    y, pullback = jax.vjp(forward, x, kernel)
    return (y,) + pullback(dy)

  try:
    actual = jax.jit(values_and_gradients)(x, kernel, dy)
  except ValueError as error:
    if not formulation.startswith("ops:"):
      raise
    return f"rejected: {error}"
  return _errors(actual, numpy_reference(x, kernel, dy, case))


def _worker() -> None:
  """Reads `[index, formulation, case]` lines from stdin; announces each run, then its errors."""
  for line in sys.stdin:
    index, formulation, data = json.loads(line)
    print(json.dumps({"start": [index, formulation]}), flush=True)
    errors = run_case(Case.from_json(data), formulation)
    print(json.dumps({"index": index, "formulation": formulation, "errors": errors}), flush=True)


def scan(cases, formulations=FORMULATIONS, *, timeout: float = 3600.0) -> list[dict]:
  """Per case, per formulation: its errors (a dict), "rejected: ..." or "abort".

  One worker subprocess runs the cases in order; when a signal kills it, the run it announced
  last is recorded as an abort and a new worker takes the rest. A Python error in a worker is a
  bug of the scan: it raises.
  """
  cases = list(cases)
  results = [{} for _ in cases]
  environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
  environment.pop("XLA_FLAGS", None)  # one device is enough
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  pending = [(i, f) for i in range(len(cases)) for f in formulations]
  while pending:
    lines = "".join(json.dumps([i, f, cases[i]._asdict()]) + "\n" for i, f in pending)
    process = subprocess.run([sys.executable, "-m", "tools.conv_gradient_map", "--worker"],
                             input=lines, capture_output=True, text=True, cwd=root,
                             env=environment, timeout=timeout)
    started = None
    for line in process.stdout.splitlines():
      message = json.loads(line)
      if "start" in message:
        started = message["start"]
      else:
        results[message["index"]][message["formulation"]] = message["errors"]
        started = None
    if process.returncode > 0 or (process.returncode < 0 and started is None):
      raise RuntimeError(f"a scan worker failed (exit status {process.returncode}):\n"
                         f"{process.stderr[-3000:]}")
    if process.returncode < 0:  # killed by a signal: SIGABRT from a failed check in XLA
      index, formulation = started
      results[index][formulation] = "abort"
      results[index]["message"] = _check_failure(process.stderr)
    pending = [(i, f) for i, f in pending if f not in results[i]]
  return results


def _check_failure(stderr: str) -> str:
  """The first line of XLA's failed check, if any."""
  for line in stderr.splitlines():
    if "Check failed" in line:
      return line[line.find("Check failed"):][:300]
  return stderr.strip().splitlines()[-1][:300] if stderr.strip() else ""


def outcome(result: dict, formulation: str = "xla") -> str:
  """'abort', 'rejected' (a ValueError), 'wrong' (some part beyond `TOLERANCE`) or 'ok'."""
  errors = result[formulation]
  if isinstance(errors, str):
    return errors.split(":")[0]
  return "wrong" if any(not e <= TOLERANCE for e in errors.values()) else "ok"


def predicted_failure(case: Case) -> str:
  """The map's rule: 'abort', 'wrong' or 'ok' for XLA:CPU's convolution on this case."""
  from cnn_jax.ops import lowering
  return lowering.xla_convolution_failure(case.spatial, case.kernel, case.stride, case.pads,
                                          case.input_dilation, case.dilation, case.groups)


# The cases of the two reports, issue 20 (a wrong input gradient) and issue 17 (an abort in
# the input gradient), and an abort in the forward convolution, which needs input dilation.
ISSUE_20 = Case(spatial=(2,), kernel=(3,), stride=(1,), dilation=(1,), input_dilation=(1,),
                pads=((3, 1),), batch=2, channels_out=3)
ISSUE_17 = Case(spatial=(6, 10), kernel=(4, 2), stride=(2, 2), dilation=(1, 1),
                input_dilation=(1, 1), pads=((1, 1), (1, 1)), channels_in=2)
FORWARD_ABORT = Case(spatial=(1, 3), kernel=(3, 2), stride=(1, 1), dilation=(1, 1),
                     input_dilation=(1, 2), pads=((1, 1), (0, 0)))


def small_cases() -> list[Case]:
  """Seconds of scanning: the two reported cases and a few neighbours of each."""
  cases = [ISSUE_20, ISSUE_17, FORWARD_ABORT]
  for lo, hi in [(2, 0), (0, 3), (4, 2)]:
    cases.append(ISSUE_20._replace(pads=((lo, hi),)))
  for rows, pads in [(5, (0, 1)), (7, (1, 1)), (7, (2, 2))]:
    cases.append(ISSUE_17._replace(spatial=(rows, 10), pads=(pads, (1, 1))))
  return cases


def full_cases(count: int = 800, seed: int = 0) -> list[Case]:
  """Random cases around the failures, 1-3 spatial axes, several batch and channel counts.

  A third 1-D: kernel 1-4, stride 1-3, dilation 1-2, input dilation 1-2, input 1-5 and pads
  -1..D (K - 1) + 2 per side. A third the abort's family: one axis where a window can look
  like a "group" window to XLA (kernel = stride in {2, 3}, mostly input dilation K - 1 and
  pads `(K - 1, K - 1 .. 2 K - 2)`: the input gradient's; or kernel = input dilation,
  stride K - 1, no pads: the forward's), beside one or two axes with small inputs and kernels
  of 2-4, stride 1-2 (or of the 1-D ranges). The rest 2-D and 3-D draws of the 1-D ranges.
  Wrong values show only with some batch and channel counts (Eigen's vectorized path), so these
  vary too: batch 1-2, 1-2 input and 1, 2, 3 or 8 output channels per group, 1 or 2 groups.
  """
  rng = np.random.default_rng(seed)
  cases, seen = [], set()
  integer = lambda low, high: int(rng.integers(low, high + 1))

  def plain_axis(max_size):
    k, d = integer(1, 4), integer(1, 2)
    extent = d * (k - 1) + 1
    return [integer(1, max_size), k, integer(1, 3), d, integer(1, 2),
            (integer(-1, extent + 2), integer(-1, extent + 2))]

  def abort_axis():
    k, aim = integer(2, 3), rng.random()
    if aim < 0.25:  # the forward convolution's window: base dilation K, stride K - 1, no pads
      return [integer(2, 6), k, k - 1, 1, k, (0, 0)]
    pads = (k - 1, integer(k - 1, 2 * k - 2)) if aim < 0.85 else (integer(0, 2), integer(0, 2))
    return [integer(2, 10), k, k, 1, k - 1 if aim < 0.85 else integer(1, 2), pads]

  def add(axes, groups):
    case = Case(*map(tuple, zip(*axes)), groups=groups, batch=integer(1, 2),
                channels_in=integer(1, 2), channels_out=int(rng.choice([1, 2, 3, 8])))
    if case.is_valid() and case not in seen:
      seen.add(case)
      cases.append(case)

  def small_axis():  # a kernel often larger than the output
    return [integer(1, 3), integer(2, 4), integer(1, 2), 1, 1, (integer(0, 2), integer(0, 2))]

  while len(cases) < count:
    kind = rng.random()
    if kind < 1 / 3:
      add([plain_axis(5)], integer(1, 2))
    elif kind < 2 / 3:
      axes = [abort_axis()] + [small_axis() if rng.random() < 0.7 else plain_axis(3)
                               for _ in range(integer(1, 2))]
      add([axes[i] for i in rng.permutation(len(axes))], 1 if rng.random() < 0.8 else 2)
    else:
      ndim = integer(2, 3)
      add([plain_axis(6 if ndim == 2 else 4) for _ in range(ndim)], integer(1, 2))
  return cases


def summarize(cases, results) -> str:
  """A Markdown table: the rule's prediction against what XLA and the explicit padding did."""
  counts = collections.Counter()
  misses = []
  for case, result in zip(cases, results):
    predicted, xla = predicted_failure(case), outcome(result, "xla")
    counts[(predicted, xla, outcome(result, "explicit"))] += 1
    if (xla == "abort") != (predicted == "abort") or (xla == "wrong" and predicted != "wrong"):
      misses.append((case, xla, predicted, result))
  lines = ["| rule | XLA | explicit padding | cases |", "|---|---|---|---|"]
  lines += [f"| {predicted} | {xla} | {explicit} | {n} |"
            for (predicted, xla, explicit), n in sorted(counts.items())]
  lines.append(f"\n{len(cases)} cases; {len(misses)} outside the rule.")
  for case, xla, predicted, result in misses[:40]:
    lines.append(f"- {case}: scan {xla}, rule {predicted}, {result}")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--small", action="store_true", help="the reported neighbourhoods only")
  parser.add_argument("--count", type=int, default=800, help="cases of the full scan")
  parser.add_argument("--seed", type=int, default=0, help="seed of the random cases")
  parser.add_argument("--output", help="write every case and its result here (JSON lines)")
  args = parser.parse_args()
  if args.worker:
    _worker()
    return
  cases = small_cases() if args.small else full_cases(args.count, args.seed)
  results = scan(cases)
  if args.output:
    with open(args.output, "w") as f:
      for case, result in zip(cases, results):
        f.write(json.dumps({"case": case._asdict(), "result": result}) + "\n")
  print(summarize(cases, results))


if __name__ == "__main__":
  main()
