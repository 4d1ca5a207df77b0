import dataclasses, pickle, sys, jax, numpy as np
import configs.debm_mnist5k as c
from dsm_jax import data, methods, platform, train
from flax.traverse_util import flatten_dict, unflatten_dict
cfg = c.get_config()
cfg.training.n_iters = int(sys.argv[2]); cfg.training.log_every = 50; cfg.runtime.progress = False
platform.apply(cfg)
ds = data.get_dataset(cfg.data, cfg.seed)
m = methods.build(cfg, ds)
old = pickle.load(open("/tmp/cmp/old.pkl", "rb"))  # old code's init at PRNGKey(0) split, as its trainer does
tmpl = jax.device_get(m.init(jax.random.PRNGKey(0)))
def convert(o, t):
  fo, ft = flatten_dict(o), flatten_dict(t)
  return unflatten_dict({k: (fo[k] if k in fo else fo[k[:-1] + ("Dense_0", k[-1])]).reshape(v.shape) for k, v in ft.items()})
p0 = {n: convert(old["init"][n], tmpl[n]) for n in ("phi", "gamma")}
k_init = jax.random.split(jax.random.PRNGKey(cfg.seed))[0]
new_init = jax.device_get(m.init(k_init))
same = [k for k, v in flatten_dict(new_init["phi"]).items() if np.array_equal(v, flatten_dict(p0["phi"])[k])]
print("phi leaves equal to the old init:", len(same), "of", len(flatten_dict(new_init["phi"])))
m2 = dataclasses.replace(m, init=lambda key: jax.tree_util.tree_map(jax.numpy.asarray, p0))
train.train(cfg, sys.argv[1], m2, ds, progress=False)
