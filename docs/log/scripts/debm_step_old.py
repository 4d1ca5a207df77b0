import numpy as np, jax, jax.numpy as jnp, pickle
import configs.debm_mnist5k as c
from dsm_jax import data, methods, train
cfg = c.get_config()
ds = data.get_dataset(cfg.data, cfg.seed)
m = methods.build(cfg, ds)
opt = train.make_optimizer(cfg)
st = train.init_state(jax.random.PRNGKey(0), m.init_params, opt, m.init_opt)
step = jax.jit(m.train_step(opt))
batch = jnp.asarray(ds.host_batches(np.arange(1), 48)[0])
out = {"init": jax.device_get(st["params"]), "key": np.asarray(jax.random.key_data(st["key"]) if hasattr(jax.random,'key_data') and st["key"].dtype!=jnp.uint32 else st["key"]), "batch": np.asarray(batch)}
s1, m1 = step(st, batch)
out["pre"] = jax.device_get(s1["params"]); out["pre_m"] = jax.device_get(m1)
st2 = dict(st); st2["step"] = jnp.asarray(1500, jnp.int32)
s2, m2 = step(st2, batch)
out["full"] = jax.device_get(s2["params"]); out["full_m"] = jax.device_get(m2)
pickle.dump(out, open("/tmp/cmp/old.pkl", "wb"))
print("saved", {k: float(v) for k, v in m2.items()})
