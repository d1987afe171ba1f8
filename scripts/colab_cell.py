# Colab only: install llmlab (keeping Colab's own CUDA torch) and the embedded model. Anywhere else it does nothing.
import sys
if "google.colab" in sys.modules:
    import runpy, subprocess
    subprocess.run("[ -d /content/llmlab ] || git clone -q --depth 1 https://github.com/llmlab-course/llmlab "
                   "/content/llmlab", shell=True, check=True)
    runpy.run_path("/content/llmlab/scripts/colab_setup.py")["main"]()
