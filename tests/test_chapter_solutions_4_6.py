"""The worked solutions of chapters 4-6, run here so they stay honest, and their self-checks.

Each chapter's exercises end in a ``self_check(name, digest)`` cell that compares a hash of the
reader's answer with ``digest``; the answers are folded into ``<details>`` blocks. These tests
compute the answers with the library (as the solutions do) and check that the notebooks' digests
are the hashes of those answers, so a self-check can never reject a right answer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mimo_lib.config import ProjectorConfig, get_preset
from mimo_lib.data.conversation import encode_conversation
from mimo_lib.language_model import GPTLanguageModel
from mimo_lib.projector import ModalityProjector, merge_frames, merge_tokens, projector_num_parameters
from mimo_lib.tokenizer import Tokenizer

CHAPTERS = Path(__file__).resolve().parents[1] / "chapters"


def digest(value) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()[:10]


def self_check_digests(name: str) -> dict[str, str]:
    """{variable: digest} of every ``self_check("variable", "digest")`` call in a chapter."""
    notebook = json.loads((CHAPTERS / name).read_text(encoding="utf-8"))
    found = {}
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and source.startswith("self_check("):
            variable, value = (part.strip().strip('"') for part in source[len("self_check("):-1].split(","))
            found[variable] = value
    return found


@pytest.mark.parametrize("name", ["04_projectors.ipynb", "05_combine_multimodal_inputs.ipynb",
                                  "06_the_full_forward_pass.ipynb"])
def test_solutions_are_folded_and_outputs_reveal_nothing(name):
    notebook = json.loads((CHAPTERS / name).read_text(encoding="utf-8"))
    cells = notebook["cells"]
    start = next(i for i, c in enumerate(cells) if "".join(c["source"]).startswith("## Exercises"))
    for cell in cells[start:]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and "<summary>Solution" in source:
            assert source.startswith("<details><summary>Solution</summary>") and source.endswith("</details>")
        if cell["cell_type"] == "code":  # your-turn cells and self-checks print only hints
            text = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []))
            assert "correct" not in text or "set " in text, (name, text)


def test_chapter_4_answers():
    checks = self_check_digests("04_projectors.ipynb")
    assert checks["answer_1"] == digest(projector_num_parameters(128, 128, 4))
    assert sum(p.numel() for p in ModalityProjector(128, 128, token_compression=4).parameters()) == 82_176
    toy = get_preset("toy")
    cfg_16 = replace(toy, vision=replace(toy.vision, num_frames=16),
                     projector=ProjectorConfig(vision_temporal_compression=1, vision_token_compression=2))
    assert checks["answer_2"] == digest(cfg_16.num_video_tokens)
    big = get_preset("llava-avlm-7b")
    positions = []
    for k in (1, 4):
        c = replace(big, projector=ProjectorConfig(vision_token_compression=k, audio_token_compression=k))
        positions.append(c.num_video_tokens + c.num_audio_tokens)
    good = []
    for k in range(1, 9):
        if big.vision.num_tokens % k or big.audio.audio_seq_len % k:
            continue
        index = torch.arange(big.vision.num_tokens, dtype=torch.float32)[None, :, None]
        rows = merge_tokens(index, k)[0].long() // big.vision.grid_size
        if (rows.amin(dim=1) == rows.amax(dim=1)).all():
            good.append(k)
    assert checks["answer_4"] == digest((positions[0], positions[1], good))
    cfg_kt2 = replace(toy, projector=ProjectorConfig(vision_temporal_compression=2))
    proj = ModalityProjector(128, 128, temporal_compression=2, tokens_per_frame=16)
    fc1 = sum(p.numel() for p in proj.linear_fc1.parameters())
    index = torch.arange(128, dtype=torch.float32)[None, :, None]
    members = merge_frames(index, 2, 16)[0, 17].long().tolist()
    assert checks["answer_5"] == digest((cfg_kt2.num_video_tokens, fc1, members))
    with pytest.raises(ValueError):
        replace(toy, projector=ProjectorConfig(vision_temporal_compression=3))


def test_chapter_4_gelu_solution():
    torch.manual_seed(0)
    proj = ModalityProjector(1024, 128)
    x = torch.randn(2, 16, 1024)
    w = proj.linear_fc2.weight @ proj.linear_fc1.weight
    b = proj.linear_fc2.weight @ proj.linear_fc1.bias + proj.linear_fc2.bias
    torch.testing.assert_close(x @ w.T + b, proj.linear_fc2(proj.linear_fc1(x)), atol=1e-5, rtol=1e-4)


def test_chapter_5_answers():
    checks = self_check_digests("05_combine_multimodal_inputs.ipynb")
    tok = Tokenizer.default()
    turns = [{"from": "human", "value": "<audio>\n<audio>\nWhich of the two notes is higher?"},
             {"from": "gpt", "value": "The second one."}]
    ids, _ = encode_conversation(tok, turns)
    assert checks["answer_1"] == digest(len(ids) - 2 + 2 * 25)
    assert checks["answer_4"] == digest(([0, 2, 3], [1, 0, 2, 3]))
    assert set(checks) == {"answer_1", "answer_2", "answer_3", "answer_4"}


def test_chapter_6_answers():
    checks = self_check_digests("06_the_full_forward_pass.ipynb")
    lm_config = get_preset("toy").language_model
    lm = GPTLanguageModel(lm_config)
    d, f = lm_config.hidden_size, lm_config.ffn_hidden_size
    per_block = 4 * d**2 + 2 * d * f + 9 * d + f
    assert per_block == sum(p.numel() for p in lm.decoder.layers[0].parameters())
    assert checks["answer_1"] == digest(per_block)
    s = 56  # section 4's first prompt: 16 video + 25 audio + 15 text positions
    assert checks["answer_3"] == digest((s + 23, 24 * s + 276))
