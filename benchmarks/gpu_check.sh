#!/usr/bin/env bash
# The GPU check of issue 17 in one command, from the repository root: the test suite on the GPU,
# fp16/bf16 agreement with the golden outputs, speed and memory of the pipeline, compile costs.
# About 8 minutes on an H100/H200; every step has its own time limit and a failed step does not
# stop the next.  It runs on whatever Python and PyTorch it finds (python3, or .venv/bin/python
# where present), importing the library from this working tree (no install, no network).
#
#   bash benchmarks/gpu_check.sh                       # on the GPU machine
#   bash benchmarks/gpu_check.sh --device cpu --quick  # the dry run on a CPU (a few minutes)
#
# Before a lent-GPU call, stage the golden data beside the tree (../shared does not travel; .gl/
# is git-ignored), on the development machine, from the repository root:
#
#   bash benchmarks/gpu_check.sh --stage
#   (= rm -rf .gl/shared && mkdir -p .gl/shared && cp -r ../shared/fidelity ../shared/samples .gl/shared/)
#
# then call the device tool with command "bash benchmarks/gpu_check.sh", carry [".gl"] and
# timeout_s 600 (about 20 MB travel).  A second, shorter call can finish what the first left
# (--steps compile, say: the summary names each step's outcome).  It needs no wheels: the machine's image has pytest, hypothesis, opencv,
# safetensors, scipy and the rest; pycocotools is absent there, so the few tests that need it
# skip.  What it writes under $OUT (at most 8 files come back; ./.dev/gpu_check where $OUT is
# unset): results.md (the section to paste into benchmarks/RESULTS.md), env.txt, tests.log,
# precision.log, pipeline.log, compile.log.  The short summary is printed last.

set -u
cd "$(dirname "$0")/.."
DEVICE=cuda
QUICK=""
STEPS="devicetests,precision,pipeline,suite,compile,precisioncompile"
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --quick) QUICK="--quick"; shift ;;
        --steps) STEPS="$2"; shift 2 ;;
        --stage)
            rm -rf .gl/shared && mkdir -p .gl/shared && cp -r ../shared/fidelity ../shared/samples .gl/shared/ || exit 1
            echo "staged $(du -sh .gl/shared | cut -f1) in .gl/shared; device call: command" \
                 "\"bash benchmarks/gpu_check.sh\", carry [\".gl\"], timeout_s 600"
            exit 0 ;;
        *) echo "usage: bash benchmarks/gpu_check.sh [--stage] [--device cuda|cpu] [--quick] [--steps $STEPS]" >&2; exit 2 ;;
    esac
done
wanted() { [[ ",$STEPS," == *",$1,"* ]]; }

OUT="${OUT:-$PWD/.dev/gpu_check}"
mkdir -p "$OUT"
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export ILLUSTPOSE_SHARED="${ILLUSTPOSE_SHARED:-$PWD/.gl/shared}"
[ -d "$ILLUSTPOSE_SHARED/fidelity" ] || export ILLUSTPOSE_SHARED="$PWD/../shared"
# compile caches of this run only (bench_compile.py sets its own per run)
TORCHINDUCTOR_CACHE_DIR="$(mktemp -d)"
export TORCHINDUCTOR_CACHE_DIR
START=$(date +%s)
STATUS=()

# step NAME LIMIT_S LOG COMMAND...: run with a time limit, log to $OUT/LOG, note the outcome
step() {
    local name="$1" limit="$2" log="$OUT/$3"; shift 3
    local t0=$(date +%s)
    echo "== $name (limit ${limit}s)" | tee -a "$log"
    timeout -k 10 "$limit" "$@" >>"$log" 2>&1
    local rc=$?
    local what="ok"
    [ $rc -ne 0 ] && what="FAILED (exit $rc)"
    [ $rc -eq 124 ] && what="STOPPED at its ${limit}s limit"
    STATUS+=("$name: $what, $(( $(date +%s) - t0 )) s")
    echo "== $name: $what" | tee -a "$log"
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown) $(git status --short 2>/dev/null | wc -l) changed files"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
    "$PY" - <<'EOF'
import platform, torch, torchvision
print("python", platform.python_version(), "torch", torch.__version__, "torchvision", torchvision.__version__,
      "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"{p.total_memory / 2**30:.1f} GiB", p.multi_processor_count, "SMs", f"sm_{p.major}{p.minor}")
EOF
    "$PY" -m pip list 2>/dev/null | grep -iE "^(numpy|pillow|opencv[-a-z]*|safetensors|scipy|pytest[-a-z]*|hypothesis|triton|pycocotools|scikit-learn|psutil|huggingface[-_]hub)\s"
    echo "golden data: $ILLUSTPOSE_SHARED ($(ls "$ILLUSTPOSE_SHARED/samples" 2>/dev/null | wc -l) samples)"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

RESULTS="$OUT/results.md"
: >"$RESULTS"
DEVICE_TESTS="tests/test_fidelity.py tests/test_fast_path_fidelity.py tests/test_speed_paths.py
    tests/test_bounded_cost.py tests/test_feat_concat.py"
IGNORE=""
for f in $DEVICE_TESTS; do IGNORE="$IGNORE --ignore=$f"; done
XDIST=""
[ -z "$QUICK" ] && "$PY" -c "import xdist" 2>/dev/null && XDIST="-n 4 --dist loadfile"
# left(PLAN_S): seconds left of a PLAN_S-second plan since the start
left() { echo $(( $1 - ($(date +%s) - START) )); }
if [ -n "$QUICK" ]; then  # the dry run: the model-output tests, and every benchmark in its smallest form
    PLAN=3600; PREC_PATHS=fp32,bf16; PIPE_ARGS="--quick"; COMPILE_ARGS="--quick --models feat_match"
else
    PLAN=480; PREC_PATHS=fp32,fp16,bf16
    PIPE_ARGS="--paths fp32,fp16,fp16+compile --batches 8,32,64,128,256"
    COMPILE_ARGS="--models segmenter,feat_match --runs library:cold,library:warm,static:cold"
fi
# the exact path keeps TF32 off by itself (Detector switches it off around fp32 forward passes)
wanted devicetests && step "tests that take a device, --device $DEVICE" $(( PLAN / 4 )) tests.log \
    "$PY" -m pytest -q -p no:cacheprovider -rfEs --device "$DEVICE" $DEVICE_TESTS
wanted precision && step "bench_precision" $(( PLAN / 8 )) precision.log \
    "$PY" benchmarks/bench_precision.py --device "$DEVICE" --paths "$PREC_PATHS" --results "$RESULTS"
wanted pipeline && step "bench_pipeline" $(( PLAN * 3 / 8 )) pipeline.log \
    "$PY" benchmarks/bench_pipeline.py --device "$DEVICE" $PIPE_ARGS --results "$RESULTS"
if wanted suite && [ -z "$QUICK" ]; then
    step "the rest of the test suite" $(( $(left $PLAN) > 150 ? $(left $PLAN) - 90 : 60 )) tests.log \
        "$PY" -m pytest -q -p no:cacheprovider -rfEs $XDIST --device "$DEVICE" $IGNORE
fi
if wanted compile; then
    if [ "$(left $PLAN)" -gt 20 ]; then
        step "bench_compile" "$(left $PLAN)" compile.log \
            "$PY" benchmarks/bench_compile.py --device "$DEVICE" $COMPILE_ARGS --results "$RESULTS"
    else
        STATUS+=("bench_compile: skipped, $(left $PLAN) s left of the ${PLAN} s plan; rerun with --steps compile")
    fi
fi
if wanted precisioncompile && [ -z "$QUICK" ]; then
    if [ "$(left $PLAN)" -gt 20 ]; then
        step "bench_precision, compiled" "$(left $PLAN)" precision.log \
            "$PY" benchmarks/bench_precision.py --device "$DEVICE" --paths fp32+compile,fp16+compile --results "$RESULTS"
    else
        STATUS+=("bench_precision, compiled: skipped; rerun with --steps precisioncompile")
    fi
fi

{
    echo "# gpu_check.sh --device $DEVICE $QUICK: $(date -u +%Y-%m-%d), $(( $(date +%s) - START )) s"
    printf -- '- %s\n' "${STATUS[@]}"
    grep -hE "^(FAILED|ERROR) |[0-9]+ (passed|failed)" "$OUT/tests.log" 2>/dev/null | tail -40
} | tee "$OUT/summary.txt"
cat "$OUT/summary.txt" "$RESULTS" >"$OUT/results.tmp" && mv "$OUT/results.tmp" "$RESULTS"
rm -f "$OUT/summary.txt"
