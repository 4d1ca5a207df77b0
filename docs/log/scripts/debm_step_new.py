import numpy as np, jax, jax.numpy as jnp, pickle
import configs.debm_mnist5k as c
from dsm_jax import data, methods, platform
from dsm_jax.train.state import NetState
from flax.traverse_util import flatten_dict, unflatten_dict
cfg = c.get_config()
platform.apply(cfg)
ds = data.get_dataset(cfg.data, cfg.seed)
m = methods.build(cfg, ds)
old = pickle.load(open("/tmp/cmp/old.pkl", "rb"))
tmpl = jax.device_get(m.init(jax.random.PRNGKey(0)))
def convert(o, t):
  fo, ft = flatten_dict(o), flatten_dict(t)
  out = {}
  for k, v in ft.items():
    if k in fo:
      out[k] = fo[k].reshape(v.shape)
    else:
      kk = k[:-1] + ("Dense_0", k[-1])
      out[k] = fo[kk].reshape(v.shape)
  assert len(fo) == len(ft), (len(fo), len(ft))
  return unflatten_dict(out)
p0 = {n: convert(old["init"][n], tmpl[n]) for n in ("phi", "gamma")}
settings = {"lr": 5e-4}
mk = lambda: {n: NetState.from_settings(p0[n], settings, 1950 * 4, 0.0, ("dae", "cd")) for n in ("phi", "gamma")}
key = jnp.asarray(old["key"])
batch = jnp.asarray(old["batch"])
step = jax.jit(m.step)
def cmp(tag, nets, ref, mets, refm):
  d = 0.0; r = 0.0
  for n in ("phi", "gamma"):
    a = flatten_dict(jax.device_get(nets[n].params)); b = flatten_dict(convert(ref[n], tmpl[n]))
    for k in a:
      d = max(d, float(np.max(np.abs(a[k] - b[k])))); r = max(r, float(np.max(np.abs(b[k] - flatten_dict(p0[n])[k]))))
  print(tag, "max |new - old| params", d, "  (size of the update", r, ")")
  for k in refm:
    if k in mets: print("   ", k, float(refm[k]), float(mets[k]))
n1, m1 = step(mk(), jax.random.fold_in(key, 0), batch, jnp.asarray(0))
cmp("pretrain step", n1, old["pre"], m1, old["pre_m"])
n2, m2 = step(mk(), jax.random.fold_in(key, 1500), batch, jnp.asarray(1500))
cmp("full step", n2, old["full"], m2, old["full_m"])
