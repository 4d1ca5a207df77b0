import numpy as np, orbax.checkpoint as ocp
from flax.traverse_util import flatten_dict
def load(p):
  return ocp.PyTreeCheckpointer().restore(p)
o = load("/work/main/runs/regress/old_6e528a5/checkpoints/500/state")
n = load("/tmp/cmp/run_oldinit500/checkpoints/500/state")
print(list(o.keys()), list(n.keys()))
op = o["params"]
np_ = {k: n["nets"][k]["params"] for k in ("phi", "gamma")}
for name in ("phi", "gamma"):
  fo, fn = flatten_dict(op[name]), flatten_dict(np_[name])
  worst, scale = 0.0, 0.0
  for k, v in fn.items():
    ov = fo.get(k)
    if ov is None:
      ov = fo[k[:-1] + ("Dense_0", k[-1])]
    ov = np.asarray(ov).reshape(v.shape)
    worst = max(worst, float(np.max(np.abs(ov - v)) / (np.max(np.abs(ov)) + 1e-12)))
    scale = max(scale, float(np.max(np.abs(ov))))
  print(name, "max relative difference per tensor", worst)
