"""llmlab: size, quantize and serve LLMs — the library behind the course.

Every number the course teaches is computed here and checked against a real model or a real GPU.
Modules, one topic each: hardware, models, memory, data, zoo, evaluate, quant/, engines, serving/, advisor, licensing.
"""

__version__ = "0.1.0"
