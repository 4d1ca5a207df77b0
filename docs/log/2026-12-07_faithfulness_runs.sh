#!/usr/bin/env bash
# Issue-26 runs from a frozen worktree; each line: name config overrides...
cd /work/rerun26
. /work/main/.venv/bin/activate
OUT=/work/main/runs/faithful
mkdir -p $OUT
run() {
  name=$1; cfg=$2; shift 2
  rm -rf $OUT/$name
  start=$(date +%s.%N)
  python -m experiments.run --config=configs/$cfg.py --workdir=$OUT/$name --config.runtime.progress=False "$@" > $OUT/$name.log 2>&1
  rc=$?
  end=$(date +%s.%N)
  echo "$name rc=$rc wall_s=$(echo "$end - $start" | bc) load=$(cut -d' ' -f1-3 /proc/loadavg) args=$*" >> $OUT/walltimes.txt
}
for job in "$@"; do
  case $job in
    debm) run debm_mnist5k debm_mnist5k ;;
    ncsn) run ncsn_mnist5k ncsn_mnist5k ;;
    ncsn_toy_plain) run ncsn_toy_plain ncsn_toy --config.model.scale_by_sigma=False --config.training.ema_rate=0.0 --config.training.schedule=constant ;;
    ncsn_toy_mala) run ncsn_toy_mala ncsn_toy --config.sampling.method=annealed_mala ;;
    dde_toy_joint) run dde_toy_joint dde_toy --config.training.ep_training=joint --config.training.batch_size=2560 ;;
    dde_mnist5k_ref) run dde_mnist5k_ref dde_mnist5k --config.training.ep_training=joint --config.training.batch_size=1000 --config.model.dde.weight_init=reference --config.model.generator.weight_init=reference --config.model.dde.quadratic=False ;;
    mdsm_pad) run mdsm_mnist5k_pad32 mdsm_mnist5k --config.data.pad_to=32 ;;
    debm_half_chain) run debm_mnist5k_half_chain debm_mnist5k --config.training.step_rule=half --config.sampling.step_rule=half --config.training.contrastive_sigma=chain ;;
    debm_sample_half)
      for m in sample eval; do
        python -m experiments.run --config=configs/debm_mnist5k.py --workdir=$OUT/debm_mnist5k --outdir=$OUT/debm_sample_half --mode=$m --config.runtime.progress=False --config.sampling.step_rule=half >> $OUT/debm_sample_half.log 2>&1
        echo "debm_sample_half $m rc=$?" >> $OUT/walltimes.txt
      done ;;
    *) echo "unknown job $job" >> $OUT/walltimes.txt ;;
  esac
done
echo "done $*" >> $OUT/walltimes.txt
