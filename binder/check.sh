#!/usr/bin/env bash
# Check binder/ as far as a machine without Docker allows: `bash binder/check.sh [WORKDIR]`.
#   1. the Dockerfile repo2docker would build (repo2docker --no-build --debug), which must run binder/postBuild and
#      binder/start on Python 3.11;
#   2. binder/postBuild's install steps in a fresh venv on a clean copy of the repository (tracked files only), the
#      embedded model cached into a fresh cache, then the environment's size and an import of the course's stack.
# LLMLAB_TORCH_WHEELS=DIR installs torch from a folder of wheels instead of PyTorch's CPU index (for machines that
# reach PyPI but not download.pytorch.org); everything else comes from the package index as on Binder.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-$(mktemp -d /tmp/llmlab-binder-check.XXXX)}"
mkdir -p "$WORK"
echo "binder check in $WORK"

python3 -m venv "$WORK/r2d"
"$WORK/r2d/bin/pip" install -q jupyter-repo2docker
"$WORK/r2d/bin/repo2docker" --no-build --debug --user-id 1000 --user-name jovyan "$REPO" > "$WORK/Dockerfile.txt" 2>&1
grep -q 'Building conda environment for python=3.11' "$WORK/Dockerfile.txt"
grep -q 'RUN ./binder/postBuild' "$WORK/Dockerfile.txt"
grep -q 'R2D_ENTRYPOINT="${REPO_DIR}/binder/start"' "$WORK/Dockerfile.txt"
echo "1. repo2docker $("$WORK/r2d/bin/repo2docker" --version): Python 3.11 conda env, runs binder/postBuild and binder/start ($WORK/Dockerfile.txt)"

rm -rf "$WORK/repo" && mkdir "$WORK/repo"
git -C "$REPO" ls-files -z | (cd "$REPO" && xargs -0 cp --parents -t "$WORK/repo")
python3.11 -m venv "$WORK/env"
POSTBUILD="$WORK/postBuild"
if [ -n "${LLMLAB_TORCH_WHEELS:-}" ]; then
  sed "s|--index-url https://download.pytorch.org/whl/cpu|--find-links $LLMLAB_TORCH_WHEELS|" \
    "$REPO/binder/postBuild" > "$POSTBUILD"
else
  cp "$REPO/binder/postBuild" "$POSTBUILD"
fi
start=$(date +%s)
(cd "$WORK/repo" && PATH="$WORK/env/bin:$PATH" LLMLAB_CACHE="$WORK/cache" bash "$POSTBUILD")
echo "2. postBuild in a fresh venv: $(( $(date +%s) - start )) s"
"$WORK/env/bin/python" - <<'PY'
import torch, transformers, jupyterlab, ipywidgets, llmlab
assert not torch.version.cuda, f"torch {torch.__version__} is a CUDA build: Binder would carry GBs of CUDA"
print(f"   torch {torch.__version__} (CPU build), transformers {transformers.__version__}, "
      f"jupyterlab {jupyterlab.__version__}, ipywidgets {ipywidgets.__version__}")
PY
echo "   environment: $(du -sh "$WORK/env" | cut -f1) (venv), embedded model cache: $(du -sh "$WORK/cache" | cut -f1)"
echo "   largest packages:"
du -s "$WORK"/env/lib/python3.11/site-packages/* | sort -rn | head -8 | awk '{printf "     %5.0f MiB  %s\n", $1/1024, $2}' | sed "s|$WORK/env/lib/python3.11/site-packages/||"
