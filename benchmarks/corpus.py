"""A deterministic benchmark corpus: sentences of common English words, lengths drawn uniformly from a
range of words with a seeded RNG. Same arguments, same file, on every machine.

    python benchmarks/corpus.py --rows 2000 --min-words 5 --max-words 120 --out /tmp/corpus.txt
"""

from __future__ import annotations

import argparse
import random
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


def write(path: str | Path, rows: int, min_words: int = 5, max_words: int = 120, seed: int = 0) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", encoding="utf-8") as handle:
        for sentence in sentences(rows, min_words, max_words, seed):
            handle.write(sentence + "\n")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--min-words", type=int, default=5)
    parser.add_argument("--max-words", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    print(write(args.out, args.rows, args.min_words, args.max_words, args.seed))


if __name__ == "__main__":
    main()
