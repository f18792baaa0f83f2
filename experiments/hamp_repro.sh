#!/bin/bash
# Issue 17 item 5: HAMP's artefact (DependableSystemsLab/MIA_defense_HAMP @ a064a1f) beside fedmist on
# Location, same split. Results: experiments/results/location-hamp-repro.md.
#
# Artefact side runs the artefact's own scripts unmodified from $ART/location (default ../hamp-artefact, a checkout of the artefact) with
#   - location-features.npy / location-labels.npy built from shared/data/location/dataset_location.tgz
#     (file order, labels 0..29),
#   - location_shuffle.pkl = np.random.default_rng(0).permutation(5010), i.e. fedmist's seed-0 split
#     permutation, so the artefact's 1350 members and 300 validation rows are fedmist's,
#   - a CPU shim on PYTHONPATH ($ART/shim, written beside the checkout, not in this repository: sitecustomize.py maps .cuda()/cuda devices
#     to cpu, torch.load map_location=cpu; pandas.py stub, imported but unused by the artefact).
# Usage: experiments/hamp_repro.sh art|fm [N_SHADOWS] ["undefended hamp"]
set -u
MODE=${1:?art or fm}
N=${2:-16}
DEFS=${3:-undefended hamp}
ROOT=$(cd "$(dirname "$0")/.." && pwd)  # the fedmist checkout
ART=${HAMP_ARTEFACT:-$ROOT/../hamp-artefact}
LOGS=$ROOT/runs/hamp-repro/logs
mkdir -p "$LOGS"
. "$ROOT/.venv/bin/activate"
export OMP_NUM_THREADS=1
t() { local name=$1; shift; local s=$(date +%s); "$@"; local rc=$?; echo "$name $(( $(date +%s) - s )) s rc=$rc" >> "$LOGS/times.txt"; return $rc; }

if [ "$MODE" = art ]; then
  cd "$ART/location"
  export PYTHONPATH=$ART/shim HAMP_CPU_SHIM=1
  TS=1500
  # targets, flags from location/train-undefended-hamp-only.sh (= train-all.sh:4,10-12)
  [ -f undefended-dmp-trainSize-1500/unprotected_model_best-0.pth.tar ] || \
    t art-train-undefended nice -n 10 python train-org-dmp.py --train_size 1500 --train_org 1 --lr 0.5 --model_save_tag 0 > $LOGS/art-train-undefended.log 2>&1
  [ -f hamp-entropyPert-05-trainSize-1500-w-entropyReg-alpha-0-001/protected_model_best-0.pth.tar ] || \
    t art-train-hamp nice -n 10 python train-hamp.py --isTrain 1 --train_size 1500 \
      --entropy_percentile 0.5 --entropy_penalty 1 --alpha 0.001 --distill_lr 0.5 --model_save_tag 0 > $LOGS/art-train-hamp.log 2>&1
  HAMP_TARGET=$(ls hamp-entropyPert-05-trainSize-1500-w-entropyReg-alpha-0-001/*best*0.pth.tar | head -1)
  # LiRA: lira-undefended.sh / lira-hamp.sh with total_models=$N (the scripts use 128)
  # N=16 used the scripts' folder names; other N get their own (folder_tag only names folders).
  SFX=$([ "$N" = 16 ] || echo "-n$N")
  for d in $DEFS; do
    ft=$d$SFX
    res=lira-$ft-fullMember-$TS
    s=$(date +%s)
    for tag in $(seq 0 $((N-1))); do
      [ -f $res/${tag}_logit.npy ] && continue   # resume: shadow already trained and queried
      if [ $d = undefended ]; then
        nice -n 10 python lira-train-org-dmp.py --train_org 1 --lr 0.5 --save_tag $tag --total_models $N \
          --train_size $TS --folder_tag $ft --gpu 0 --res_folder $res
        nice -n 10 python lira-inference.py --org_path shadow-$ft-trainSize-$TS-fullMember/unprotected_model_best-$tag.pth.tar \
          --save_tag $tag --train_size $TS --res_folder $res --isModifyOutput 0 --gpu 0
      else
        nice -n 10 python lira-train-hamp.py --isTrain 1 --train_size $TS --entropy_percentile 0.5 \
          --entropy_penalty 1 --alpha 0.001 --distill_lr 0.5 --save_tag $tag --total_models $N \
          --folder_tag $ft --gpu 0 --res_folder $res
        nice -n 10 python lira-inference.py --org_path shadow-$ft-trainSize-$TS-fullMember/protected_model_best-$tag.pth.tar \
          --save_tag $tag --train_size $TS --res_folder $res --isModifyOutput 1 --gpu 0
      fi
    done > $LOGS/art-shadows-$d$SFX.log 2>&1
    echo "art-shadows-$d ($N) $(( $(date +%s) - s )) s" >> $LOGS/times.txt
    if [ $d = undefended ]; then tgt=undefended-dmp-trainSize-1500/unprotected_model_best-0.pth.tar; om=0
    else tgt=$HAMP_TARGET; om=1; fi
    t art-lira-$d$SFX bash -c "python lira-score.py --res_folder $res && \
      python lira-inference-defense.py --org_path $tgt --train_size $TS --res_folder lira-$ft-defense-fullMember-$TS --isModifyOutput $om && \
      python lira-score.py --res_folder lira-$ft-defense-fullMember-$TS && \
      python lira-plot.py --shadow_data_path $res --test_data_path lira-$ft-defense-fullMember-$TS --save_tag $d-$N --output_folder attack_outputs" \
      > $LOGS/art-lira-$d$SFX.log 2>&1
  done
elif [ "$MODE" = fm ]; then
  cd "$ROOT"
  R=runs/hamp-repro
  ATK=loss,lira_online,lira_online_fixed,lira_offline,lira_offline_fixed,rmia
  [ -f $R/fm-hamp/model.pt ] || t fm-sim-hamp nice -n 10 fedmist simulate --recipe experiments/recipes/location-hamp-artefact.toml \
      --train-size 1650 --reference-size 300 --seed 0 --out $R/fm-hamp > $LOGS/fm-sim-hamp.log 2>&1
  [ -f $R/fm-sgd/model.pt ] || t fm-sim-sgd nice -n 10 fedmist simulate --recipe experiments/recipes/location-sgd.toml \
      --train-size 1350 --epochs 50 --lr 0.5 --momentum 0 --weight-decay 0 --batch-size 64 --seed 0 \
      --out $R/fm-sgd > $LOGS/fm-sim-sgd.log 2>&1
  t fm-atk-sgd nice -n 10 fedmist attack $R/fm-sgd --shadows $N --attacks $ATK --shadow-engine inprocess > $LOGS/fm-atk-sgd.log 2>&1
  t fm-atk-hamp nice -n 10 fedmist attack $R/fm-hamp --shadows $N --attacks $ATK --shadow-engine inprocess > $LOGS/fm-atk-hamp.log 2>&1
  [ -f $R/fm-hamp-om/model.pt ] || t fm-sim-hamp-om nice -n 10 fedmist simulate --recipe experiments/recipes/location-hamp-artefact-om.toml \
      --train-size 1650 --reference-size 300 --seed 0 --out $R/fm-hamp-om > $LOGS/fm-sim-hamp-om.log 2>&1
  t fm-atk-hamp-om nice -n 10 fedmist attack $R/fm-hamp-om --shadows $N --attacks $ATK --shadow-engine inprocess > $LOGS/fm-atk-hamp-om.log 2>&1
fi
