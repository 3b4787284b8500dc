"""Byte-level corpora: sources, the fixed train/validation split, seeded batches."""
import json
import socket

import pytest
import torch

from harness.corpora import (DOC_SEPARATOR, CorpusSpec, causal_batches, dataset_text, file_text, head_bytes,
                             load_corpus, masked_batches, pydoc_text, resolved_spec, split_point)
from harness.training import IGNORE_INDEX


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_pydoc_corpus_is_real_prose_in_a_fixed_order(no_network):
    from pydoc_data.topics import topics

    text = pydoc_text()
    assert text == DOC_SEPARATOR.join(topics[k] for k in sorted(topics))
    assert text.startswith(topics[sorted(topics)[0]])
    corpus = load_corpus(CorpusSpec())
    assert corpus.data == text.encode("utf-8") and len(corpus.data) > 100_000
    assert corpus.description.startswith("pydoc_data.topics")
    words = corpus.data.split()
    assert words.count(b"the") > 1000, "English prose"


def test_split_is_contiguous_disjoint_and_ten_percent():
    corpus = load_corpus(CorpusSpec())
    train, val = corpus.train, corpus.val
    assert train + val == corpus.data, "contiguous: nothing dropped, nothing repeated"
    assert len(val) == pytest.approx(0.1 * len(corpus.data), abs=4)
    assert len(train) == corpus.cut >= int(0.9 * len(corpus.data))
    val.decode("utf-8")  # the validation text is text (lm-eval scores strings)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_split_point_lands_on_a_character_boundary(fraction):
    data = ("ab" + "é€😀" * 50).encode("utf-8")  # 2-, 3- and 4-byte characters
    for n in range(len(data) - 20, len(data) + 1):
        cut = split_point(data[:n], fraction)
        assert cut >= int(n * (1 - fraction))
        head, tail = data[:n][:cut], data[:n][cut:]
        head.decode("utf-8")
        if tail:
            assert tail[0] & 0xC0 != 0x80, "the validation split starts at a character, not inside one"


def test_head_bytes_keeps_whole_characters():
    data = "aé€".encode("utf-8")  # 1 + 2 + 3 bytes
    assert [head_bytes(data, n) for n in range(7)] == [b"", b"a", b"a", "aé".encode(), "aé".encode(),
                                                      "aé".encode(), data]
    assert head_bytes(data, None) == data


def test_file_and_directory_corpora(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_text("second")
    (tmp_path / "d" / "a.txt").write_text("first")
    (tmp_path / "d" / "sub" / "c.txt").write_text("third")
    (tmp_path / "d" / "skip.bin").write_bytes(b"\xff\xfe")
    assert file_text(tmp_path / "d" / "a.txt") == "first"
    assert file_text(tmp_path / "d", "**/*.txt") == "first\n\nsecond\n\nthird"  # sorted by path
    with pytest.raises(ValueError, match="skip.bin is not UTF-8"):
        file_text(tmp_path / "d")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        file_text(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="no files match"):
        file_text(tmp_path / "d", "*.md")


def test_relative_paths_resolve_against_the_suite_directory(tmp_path, monkeypatch):
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "text.txt").write_text("hello world " * 100)
    monkeypatch.chdir(tmp_path)  # the working directory is not where the file is
    spec = CorpusSpec(kind="file", path="text.txt", val_fraction=0.2)
    assert resolved_spec(spec, tmp_path / "suites").path == str(tmp_path / "suites" / "text.txt")
    corpus = load_corpus(spec, base_dir=tmp_path / "suites")
    assert corpus.data == ("hello world " * 100).encode() and len(corpus.val) == 240
    with pytest.raises(FileNotFoundError):
        load_corpus(spec)  # relative to the working directory: no such file


def test_spec_needs_its_fields():
    with pytest.raises(ValueError, match="needs `path`"):
        CorpusSpec(kind="file")
    with pytest.raises(ValueError, match="needs `name`"):
        CorpusSpec(kind="hf")
    with pytest.raises(ValueError):
        CorpusSpec(kind="pydoc", val_fraction=1.5)


def test_dataset_text_from_a_dataset_like_object():
    class Fake:
        column_names = ["text", "id"]

        def __getitem__(self, key):
            if key != "text":
                raise KeyError(key)
            return ["one", "two", "three"]

    assert dataset_text(Fake(), "text", "fake") == "one\n\ntwo\n\nthree"
    with pytest.raises(KeyError, match=r"no text field 'body'; columns: \['text', 'id'\]"):
        dataset_text(Fake(), "body", "fake")
    with pytest.raises(TypeError, match="document 1 is int"):
        dataset_text({"text": ["a", 3]}, "text", "fake")


def test_hf_corpus_through_datasets_on_local_json(tmp_path, no_network):
    pytest.importorskip("datasets")
    rows = [{"text": f"document number {i}: " + "words " * 20, "id": i} for i in range(30)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = CorpusSpec(kind="hf", name="json", data_files="docs.jsonl", split="train", text_field="text")
    corpus = load_corpus(spec, base_dir=tmp_path)
    assert corpus.data == DOC_SEPARATOR.join(r["text"] for r in rows).encode()
    assert corpus.description == "hf json[train]"


def test_causal_batches_are_seeded_shifted_and_only_from_the_training_split():
    data = (b"abcdefghijklmnopqrstuvwxyz" * 40) + b"Z" * 100  # the last 100 bytes play the validation split
    train = data[:split_point(data, 100 / len(data))]
    assert b"Z" not in train
    a, b = causal_batches(train, 16, 8, seed=3), causal_batches(train, 16, 8, seed=3)
    for _ in range(20):
        (xa, ya), (xb, yb) = next(a), next(b)
        assert torch.equal(xa, xb) and torch.equal(ya, yb), "same seed, same batches"
        assert xa.shape == (8, 16) and xa.dtype == torch.int64
        assert torch.equal(xa[:, 1:], ya[:, :-1]), "targets are the inputs shifted by one"
        for row_x, row_y in zip(xa, ya):
            window = bytes(row_x.tolist()) + bytes(row_y[-1:].tolist())
            assert window in train
    x_other, _ = next(causal_batches(train, 16, 8, seed=4))
    assert not torch.equal(x_other, next(causal_batches(train, 16, 8, seed=3))[0])


def test_masked_batches():
    train = bytes(range(32, 127)) * 20
    gen = masked_batches(train, 64, 16, seed=0, mask_prob=0.15, mask_id=256, ignore_index=IGNORE_INDEX)
    inputs, targets = next(gen)
    masked = inputs == 256
    assert masked.any(dim=1).all(), "at least one masked byte per window"
    assert torch.equal(masked, targets != IGNORE_INDEX), "targets exactly at the masked positions"
    assert ((targets[masked] >= 32) & (targets[masked] < 127)).all()
    assert 0.08 < masked.float().mean() < 0.25
    inputs2, _ = next(masked_batches(train, 64, 16, seed=0, mask_prob=0.15, mask_id=256,
                                     ignore_index=IGNORE_INDEX))
    assert torch.equal(inputs, inputs2)
