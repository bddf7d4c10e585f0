"""Regenerates the settings table in README.md from the settings declaration
(`ferrule --print-settings-reference`), between its two marker comments."""

import pathlib
import re
import subprocess
import sys

root = pathlib.Path(__file__).resolve().parents[1]
ferrule = pathlib.Path(sys.executable).parent / "ferrule"
table = subprocess.run([str(ferrule), "--print-settings-reference"], capture_output=True, text=True, check=True).stdout
readme = root / "README.md"
text = readme.read_text()
new, count = re.subn(
    r"(<!-- settings:start -->\n).*?(<!-- settings:end -->)",
    lambda m: m.group(1) + table + m.group(2),
    text,
    flags=re.S,
)
if count != 1:
    sys.exit("README.md lacks the settings markers")
readme.write_text(new)
