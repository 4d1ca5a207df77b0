"""Executes notebooks in place and stamps each code cell with a hash of the source that produced its outputs.

    python notebooks/execute.py                         # every notebook in notebooks/, at its default size
    python notebooks/execute.py notebooks/quickstart.ipynb [--size=tiny] [--no-write]

The kernel is this interpreter (a kernel spec written to a temporary JUPYTER_PATH, so no registered kernel is
needed) with the repository root first on PYTHONPATH, so the notebooks import this checkout's dsm_jax and configs.
`--size` sets DSM_NOTEBOOK_SIZE, the one variable each notebook's first cell reads (tiny | small | large; unset:
small on a CPU, large on a GPU/TPU). Each code cell gets metadata {"dsm_jax": {"source_sha256": ...}} and the
notebook {"dsm_jax": {"size": ..., "seconds": ...}}; `problems(nb)` is the check that a committed notebook's
outputs come from its current code (tests/test_notebook.py runs it on every notebook).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import pathlib
import sys
import tempfile
import time

NOTEBOOKS = pathlib.Path(__file__).resolve().parent
REPO = NOTEBOOKS.parent
KERNEL = "dsm_jax_python3"
SIZE_VAR = "DSM_NOTEBOOK_SIZE"
STAMP = "dsm_jax"
FIGURES = NOTEBOOKS / "figures"  # the README's thumbnails, one per notebook
THUMB_WIDTH = 360


def source_hash(source: str) -> str:
  return hashlib.sha256(source.encode("utf-8")).hexdigest()


def notebook_paths() -> list:
  return sorted(NOTEBOOKS.glob("*.ipynb"))


@contextlib.contextmanager
def kernel_env(env: dict | None = None, unset=()):
  """A kernel spec for this interpreter, the repository first on PYTHONPATH, `env` set and the variables `unset`
  removed, for the duration."""
  saved = dict(os.environ)
  with tempfile.TemporaryDirectory(prefix="dsm_jax_kernel_") as root:
    spec = pathlib.Path(root) / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (dsm_jax)", "language": "python"}))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (root, saved.get("JUPYTER_PATH", "")) if p)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), saved.get("PYTHONPATH", "")) if p)
    os.environ.update(env or {})
    for k in unset:
      os.environ.pop(k, None)
    try:
      yield KERNEL
    finally:
      os.environ.clear()
      os.environ.update(saved)


def execute(path, size: str | None = None, env: dict | None = None, write: bool = True, timeout: int = 1800):
  """Runs the notebook at `path` top to bottom in a fresh kernel (size: DSM_NOTEBOOK_SIZE, None = the notebook's
  default for the backend); stamps the hashes and returns the executed notebook (written back if `write`).
  Raises nbclient's CellExecutionError on the first failing cell."""
  import nbclient
  import nbformat
  path = pathlib.Path(path)
  nb = nbformat.read(path, as_version=4)
  env = dict(env or {})
  if size:
    env[SIZE_VAR] = size
  with kernel_env(env, unset=() if size else (SIZE_VAR,)) as kernel:
    client = nbclient.NotebookClient(nb, kernel_name=kernel, timeout=timeout, startup_timeout=120,
                                     resources={"metadata": {"path": str(path.parent)}})
    tic = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - tic
  for cell in nb.cells:
    if cell.cell_type == "code":
      cell.metadata[STAMP] = {"source_sha256": source_hash(cell.source)}
      cell.outputs = [o for o in cell.outputs if not is_machine_noise(o)]
  nb.metadata[STAMP] = {"size": executed_size(nb) or size, "seconds": round(seconds, 1)}
  nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
  if write:
    nbformat.write(nb, path)
    save_thumbnail(nb, FIGURES / f"{path.stem}.png")
  return nb


def save_thumbnail(nb, out) -> str | None:
  """Writes the first figure of the cell tagged 'thumbnail' to `out` as a PNG THUMB_WIDTH pixels wide."""
  import base64
  import io

  from PIL import Image
  for cell in nb.cells:
    if cell.cell_type == "code" and "thumbnail" in cell.metadata.get("tags", []):
      for o in cell.outputs:
        if "image/png" in o.get("data", {}):
          img = Image.open(io.BytesIO(base64.b64decode(o["data"]["image/png"]))).convert("RGB")
          img = img.resize((THUMB_WIDTH, max(1, round(img.height * THUMB_WIDTH / img.width))), Image.LANCZOS)
          pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
          img.quantize(colors=128).save(out, optimize=True)  # a palette PNG: a few tens of kB
          return str(out)
  return None


def is_machine_noise(output) -> bool:
  """True for a stderr output that only reports XLA's slow-compile alarm or a kernel transport warning: they tell
  how loaded the executing machine was, not what the notebook computed."""
  if output.get("output_type") != "stream" or output.get("name") != "stderr":
    return False
  noise = ("slow_operation_alarm", "Very slow compile?", "The operation took", "****", "Kernel is running over TCP")
  lines = [line for line in output.get("text", "").splitlines() if line.strip()]
  return all(any(n in line for n in noise) for line in lines)


def executed_size(nb) -> str | None:
  """The size the first code cell printed ("SIZE=<name>"), or None."""
  code = [c for c in nb.cells if c.cell_type == "code"]
  for out in code[0].outputs if code else []:
    for line in out.get("text", "").splitlines():
      if line.startswith("SIZE="):
        return line.split("=", 1)[1].split()[0].strip(",")
  return None


def problems(nb) -> list:
  """Why the notebook's stored outputs may not come from its current code: cells run out of order or not at all,
  a cell edited after execution (its hash differs), an error output, no figure at all. Empty when it is current."""
  out = []
  code = [c for c in nb.cells if c.cell_type == "code"]
  counts = [c.execution_count for c in code]
  if counts != list(range(1, len(code) + 1)):
    out.append(f"execution counts {counts} are not 1..{len(code)} in order (run top to bottom in a fresh kernel)")
  for i, c in enumerate(code):
    stamp = c.metadata.get(STAMP, {}).get("source_sha256")
    if stamp != source_hash(c.source):
      out.append(f"code cell {i + 1} was {'never stamped' if stamp is None else 'edited after execution'}: "
                 f"{c.source.strip().splitlines()[0][:80] if c.source.strip() else '(empty)'}")
    if any(o.output_type == "error" for o in c.outputs):
      out.append(f"code cell {i + 1} stored an error")
  if not any("image/png" in o.get("data", {}) for c in code for o in c.outputs):
    out.append("no figure in the outputs")
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("notebooks", nargs="*", help="default: every notebooks/*.ipynb")
  ap.add_argument("--size", default=None, help=f"{SIZE_VAR} (tiny | small | large); default: the backend's")
  ap.add_argument("--no-write", action="store_true", help="execute without writing the notebook back")
  args = ap.parse_args(argv)
  for path in args.notebooks or notebook_paths():
    tic = time.perf_counter()
    nb = execute(path, args.size, write=not args.no_write)
    print(f"{path}: size {nb.metadata[STAMP]['size']}, {time.perf_counter() - tic:.0f} s", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
