"""Write a notebook from a percent-format script (authoring aid): `python scripts/py2nb.py src.py notebooks/NN_x.ipynb`.

Cells start at lines `# %%` (code) or `# %% [markdown]` (markdown; each line's leading `# ` is dropped).
The notebook is written without outputs, with the course kernel (python3).
"""

import sys

import nbformat


def convert(source: str) -> nbformat.NotebookNode:
    cells, kind, lines = [], None, []

    def flush():
        text = "\n".join(lines).strip("\n")
        if kind == "markdown":
            cells.append(nbformat.v4.new_markdown_cell("\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in text.splitlines())))
        elif kind == "code" and text.strip():
            cells.append(nbformat.v4.new_code_cell(text))

    for line in source.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        else:
            lines.append(line)
    flush()
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        nbformat.write(convert(handle.read()), sys.argv[2])
