"""Deterministic benchmark corpora.

- ``sentences``: sentences of common English words, lengths drawn uniformly from a range of words with a
  seeded RNG. Same arguments, same file, on every machine.
- ``real_sentences``: real English prose of naturally varied length, written by people: the sentences of
  the docstrings of the Python standard library this runs on (no download; the same Python version gives
  the same sentences), deduplicated, shuffled with a seed.

    python benchmarks/corpus.py --rows 2000 --min-words 5 --max-words 120 --out /tmp/corpus.txt
    python benchmarks/corpus.py --real --rows 3000 --out /tmp/real.txt
"""

from __future__ import annotations

import argparse
import ast
import random
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path

WORDS = """
the of and to in is was for that on with as by at from his her it an be this are which or had not but
have were they all one their there been has when who will more no if out so said what up its about into
than them can only other new some time could these two may then do first any my now such like our over
man me even most made after also did many before must through back years where much your way well down
should because each just those people how too little state good very make world still own see men work
long get here between both life being under never day same another know while last might us great old
year off come since against go came right used take three states himself few house use during without
again place around however home small found thought went say part once general high upon school every
does got united left number course war until always away something fact though water less public put
think almost hand enough far took head yet government system better set told nothing night end why
called find going look asked later knew point next program city business give group toward young days
let room president side social given present several order national possible rather second face per
among form important often things looked early white case john become large big need four within felt
along children saw best church ever least power development light thing seemed family interest want
members mind country area others done turned although open problem sense certain law began model train
inference tracing graph tensor kernel memory latency throughput batch token sentence embedding vector
""".split()


def sentences(rows: int, min_words: int = 5, max_words: int = 120, seed: int = 0) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(rows):
        n = rng.randint(min_words, max_words)
        words = [rng.choice(WORDS) for _ in range(n)]
        words[0] = words[0].capitalize()
        yield " ".join(words) + "."


_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PROSE = re.compile(r"^[A-Z][A-Za-z0-9 ,;:'\"()\-/]*[A-Za-z0-9)'\"][.!?]$")


def real_sentences(rows: int, min_words: int = 4, max_words: int = 120, seed: int = 0) -> list[str]:
    """``rows`` sentences of prose from the standard library's docstrings (tests and demos left out):
    capitalized, ending in . ! or ?, no code (no ``>>>``, ``=``, brackets, underscores)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if any(part in rel for part in ("test", "site-packages", "idlelib", "lib2to3", "turtledemo")):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node)
            if not doc:
                continue
            for paragraph in doc.split("\n\n"):
                text = " ".join(paragraph.split())
                for sentence in _SPLIT.split(text):
                    words = sentence.split()
                    if min_words <= len(words) <= max_words and _PROSE.match(sentence) and "_" not in sentence:
                        found.add(sentence)
    pool = sorted(found)
    random.Random(seed).shuffle(pool)
    if len(pool) < rows:
        raise SystemExit(f"only {len(pool)} real sentences in {root}; ask for fewer rows")
    return pool[:rows]


def write(
    path: str | Path, rows: int, min_words: int = 5, max_words: int = 120, seed: int = 0, real: bool = False
) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    texts = real_sentences(rows, seed=seed) if real else sentences(rows, min_words, max_words, seed)
    with open(target, "w", encoding="utf-8") as handle:
        for sentence in texts:
            handle.write(sentence + "\n")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--min-words", type=int, default=5)
    parser.add_argument("--max-words", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", action="store_true", help="real sentences (the standard library's docstrings)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    print(write(args.out, args.rows, args.min_words, args.max_words, args.seed, args.real))


if __name__ == "__main__":
    main()
