"""Make every notebook's first code cell the text of scripts/colab_cell.py: `python scripts/sync_colab_cell.py`.

Touches only that cell's source (outputs stay empty, other cells untouched); prints the notebooks it changed.
tests/test_colab_cell.py fails while any notebook is out of date.
"""

import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    cell = (REPO / "scripts" / "colab_cell.py").read_text().strip("\n")
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        first = next((c for c in notebook.cells if c.cell_type == "code"), None)
        if first is None or first.source == cell:
            continue
        first.source = cell
        nbformat.write(notebook, path)
        print(f"updated {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
