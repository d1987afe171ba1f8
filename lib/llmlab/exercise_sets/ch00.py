"""Chapter 00 exercises."""

from llmlab.exercises import register


@register("00.1", "How many parameters does the embedded model have? (an exact integer)",
          "load_spec('smollm2-135m').params")
def _():
    from llmlab.models import load_spec

    return load_spec("smollm2-135m").params


@register("00.2", "Does a Colab T4 run FP8 matrix multiplications natively? (True or False)",
          "supports('T4', 'fp8')")
def _():
    from llmlab.hardware import supports

    return supports("T4", "fp8")
