"""Any local causal LM: seven architectures with quirky tokenizers through train -> resume ->
evaluate -> recommend (tallrec and msl, alpha > 0; llara on two), LoRA targets per
architecture, GGUF files, precision, and one-line refusals of what cannot work.

Beam-search scores are checked against teacher-forced scoring of the same titles without a
cache, so each architecture's cache, positions and padding handling is verified, not only run.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import pytest
import torch

from tca4rec.errors import ConfigError

from .conftest import adapter_tensors
from .zoo import ARCHITECTURES, save_tiny_model

AUTO_BOS = {"llama", "gemma", "opt"}  # their tokenizers put BOS before a text by themselves
NO_PAD = {"llama", "gpt2", "gpt_neox", "opt"}
WITH_CHAT_TEMPLATE = {"qwen2", "phi3", "gemma"}


@pytest.fixture(scope="session")
def zoo(tmp_path_factory, tokenizer, synth_dataset) -> dict:
    """arch -> folder of a tiny random model of that architecture (built once per session)."""
    from tca4rec.llm.prompts import INSTRUCTION, RESPONSE

    root = tmp_path_factory.mktemp("zoo")
    corpus = list(synth_dataset.titles[1:]) + [INSTRUCTION, RESPONSE, "User. History: ", ", ", '"', " [emb]"]
    return {arch: save_tiny_model(arch, root / arch, tokenizer, corpus) for arch in ARCHITECTURES}


def _layer_suffixes(modules: list[str]) -> set[str]:
    return {re.sub(r"^.*?\.\d+\.", "", name) for name in modules}


def _lora_parameter_count(llm_dir, modules: list[str], r: int) -> int:
    """Reference: r * (fan_in + fan_out) per adapted module, from the plain model's weights."""
    from transformers import AutoModelForCausalLM

    named = dict(AutoModelForCausalLM.from_pretrained(llm_dir).named_modules())
    return sum(r * sum(named[name].weight.shape) for name in modules)


def _teacher_forced(run, history: list[int], item_id: int) -> float:
    """Slow reference of a beam score: one full forward of prompt + title + EOS, no cache. Each
    token's log-prob is over the whole vocabulary, or (msl) over the trie children of its prefix
    at temperature tau, the children found by scanning every item's tokens."""
    targets = [[t for t in row if t >= 0] for row in run.host.target_tokens.tolist()]
    prompt = run.host.prompts(torch.tensor([history])).input_ids[0].tolist()
    target = targets[item_id - 1]
    with torch.no_grad():
        logits = run.host.llm(input_ids=torch.tensor([prompt + target])).logits[0].double()
    total = 0.0
    for k, token in enumerate(target):
        step = logits[len(prompt) - 1 + k]
        if run.host.host_config.masked:
            children = sorted({t[k] for t in targets if t[:k] == target[:k]})
            scaled = step[children] / run.host.host_config.softmax_tau
            total += float(scaled.log_softmax(-1)[children.index(token)])
        else:
            total += float(step.log_softmax(-1)[token])
    return total


def _check_scores(run_dir, synth_dataset):
    """Every evaluated item's score equals the slow reference; returns the loaded run."""
    from tca4rec.llm.run import load_llm_run

    run = load_llm_run(run_dir)
    test = synth_dataset.split("test")
    for row, line in enumerate((run_dir / "predictions_test.jsonl").read_text().splitlines()):
        prediction = json.loads(line)
        assert len(prediction["items"]) == 2 and all(1 <= i <= synth_dataset.num_items for i in prediction["items"])
        for item, score in zip(prediction["items"], prediction["scores"]):
            assert score == pytest.approx(_teacher_forced(run, test.histories[row].tolist(), item), abs=1e-4)
    return run


def _killed_after_first_checkpoint(run_dir, dest):
    """A copy of a finished 2-step run as it was when killed after checkpoint 1."""
    finished = {"adapter", "ct.safetensors", "train_state.json"}  # written at the end only
    shutil.copytree(run_dir, dest, ignore=lambda folder, names: [
        n for n in names if n == "checkpoint-2" or (folder == str(run_dir) and n in finished)])
    return dest


def _check_tokenizer_quirks(arch: str, llm_dir, synth_dataset) -> None:
    from transformers import AutoTokenizer

    from tca4rec.align.trie import TitleTrie
    from tca4rec.llm.model import load_tokenizer
    from tca4rec.llm.prompts import PromptBuilder, title_token_ids

    raw = AutoTokenizer.from_pretrained(llm_dir)
    assert (raw.pad_token is None) == (arch in NO_PAD)
    assert (raw.chat_template is not None) == (arch in WITH_CHAT_TEMPLATE)
    tok = load_tokenizer(llm_dir)
    assert tok.pad_token_id is not None
    prompt = PromptBuilder(tok).build([]).ids
    assert (prompt[0] == tok.bos_token_id) == (arch in AUTO_BOS)
    titles = list(synth_dataset.titles[1:21])
    ids = title_token_ids(tok, titles)
    assert [tok.decode(t) for t in ids] == titles  # the trie's tokens spell the titles exactly
    assert ids == [tok(t, add_special_tokens=False).input_ids for t in titles]  # as the tokenizer, one by one
    # A title holding a special token's text is text (characters a vocabulary lacks are <unk>, as
    # anywhere), never a control token, so the trie builds: EOS read as the special token inside a
    # title refused the whole catalog before.
    hostile = [f"Pen {special} Holder" for special in tok.all_special_tokens] + [f"Ink {tok.eos_token}"]
    hostile_ids = title_token_ids(tok, hostile)
    control = set(tok.all_special_ids) - {tok.unk_token_id}
    assert not control & {i for t in hostile_ids for i in t}
    TitleTrie(hostile_ids, tok.eos_token_id)
    if ARCHITECTURES[arch][0].startswith("sp"):
        assert all(tok.convert_ids_to_tokens(t[0]).startswith("▁") for t in ids)


def test_special_token_text_in_a_title_is_spelled_as_text(tokenizer):
    from tca4rec.align.trie import TitleTrie
    from tca4rec.llm.prompts import title_token_ids

    titles = ["Pen <|im_end|> Holder", "Ink <|endoftext|>", "<|im_start|>assistant", "Pen Holder"]
    ids = title_token_ids(tokenizer, titles)
    assert [tokenizer.decode(t) for t in ids] == titles
    assert not set(tokenizer.all_special_ids) & {i for t in ids for i in t}
    assert ids[3] == tokenizer(titles[3], add_special_tokens=False).input_ids  # plain titles: as before
    trie = TitleTrie(ids, tokenizer.eos_token_id)
    assert trie.item_token_ids() == ids
    # the shared tokenizer is left as it was: its own calls still read special tokens
    assert tokenizer(titles[0], add_special_tokens=False).input_ids.count(tokenizer.eos_token_id) == 1


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_architecture_trains_resumes_evaluates_recommends(arch, zoo, small_config, cf_run, synth_dataset, tmp_path):
    from tca4rec.llm.evaluate import evaluate_llm_run
    from tca4rec.llm.recommend import recommend
    from tca4rec.llm.train import train

    llm_dir = zoo[arch]
    _check_tokenizer_quirks(arch, llm_dir, synth_dataset)

    # tallrec + TCA4Rec, two steps with a checkpoint after each.
    config = small_config(tmp_path / "tallrec", llm=str(llm_dir), alpha=0.1, cf=str(cf_run), train_limit=4,
                          max_steps=2)
    run_dir = train(config)
    report = json.loads((run_dir / "llm.json").read_text())
    expected = ARCHITECTURES[arch][1]
    assert _layer_suffixes(report["lora_modules"]) == expected and len(report["lora_modules"]) == 2 * len(expected)
    assert report["trainable_parameters"] == _lora_parameter_count(llm_dir, report["lora_modules"], config.lora_r)
    assert report["dtype"] == "float32"
    # LoRA B starts at zero: a nonzero B proves the optimizer reached the adapters.
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapter_tensors(run_dir).items())

    # --resume from the first checkpoint, as after a kill: the same adapter as the uninterrupted run.
    killed = _killed_after_first_checkpoint(run_dir, tmp_path / "killed")
    train(dataclasses.replace(config, out=str(killed)), resume=True)
    assert json.loads((killed / "train_state.json").read_text())["global_step"] == 2
    resumed, uninterrupted = adapter_tensors(killed), adapter_tensors(run_dir)
    assert resumed.keys() == uninterrupted.keys()
    for key, value in resumed.items():
        torch.testing.assert_close(value, uninterrupted[key], atol=1e-6, rtol=0)

    evaluate_llm_run(run_dir, limit=2, beams=2)
    run = _check_scores(run_dir, synth_dataset)
    test = synth_dataset.split("test")
    recs = recommend(run_dir, [synth_dataset.titles[i] for i in test.history(0)], k=2, beams=2, run=run)
    assert len(recs) == 2 and recs[0].score >= recs[1].score
    assert all(synth_dataset.titles[r.item_id] == r.title for r in recs)

    # msl + TCA4Rec: the masked softmax in training and in decoding.
    msl_dir = train(small_config(tmp_path / "msl", llm=str(llm_dir), host="msl", alpha=0.1, cf=str(cf_run),
                                 train_limit=4))
    assert evaluate_llm_run(msl_dir, limit=1, beams=2)["rows"] == 1
    _check_scores(msl_dir, synth_dataset)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_llara_on_two_architectures(arch, zoo, small_config, cf_run, synth_dataset, tmp_path):
    """CF embeddings in the prompt (inputs_embeds) on a rotary and an absolute-position model."""
    from tca4rec.llm.evaluate import evaluate_llm_run
    from tca4rec.llm.run import load_llm_run
    from tca4rec.llm.train import train

    run_dir = train(small_config(tmp_path / "run", llm=str(zoo[arch]), host="llara", alpha=0.1, cf=str(cf_run),
                                 train_limit=4))
    report = json.loads((run_dir / "llm.json").read_text())
    projector = sum(p.numel() for p in load_llm_run(run_dir).host.projector.parameters())
    assert report["trainable_parameters"] == _lora_parameter_count(zoo[arch], report["lora_modules"], 8) + projector
    assert (run_dir / "projector.safetensors").is_file()
    evaluate_llm_run(run_dir, limit=1, beams=2)
    items = json.loads((run_dir / "predictions_test.jsonl").read_text().splitlines()[0])["items"]
    assert len(items) == 2 and all(1 <= i <= synth_dataset.num_items for i in items)


# ---- LoRA targets ---------------------------------------------------------------------------

def _error_line(stderr: str) -> str:
    """The CLI's one error line (progress bars may share stderr); never a traceback."""
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in stderr and len(errors) == 1
    return errors[0]


def _base_model(llm_dir):
    from tca4rec.llm.model import load_causal_lm

    return load_causal_lm(llm_dir)


def test_default_targets_are_the_attention_projections(zoo):
    from tca4rec.llm.lora import plan_lora

    for arch, (_, expected) in ARCHITECTURES.items():
        plan = plan_lora(_base_model(zoo[arch]), None, arch)
        assert set(plan.targets) == expected, arch  # short names, one per projection
        assert _layer_suffixes(plan.modules) == expected and len(plan.modules) == 2 * len(expected)
        assert plan.fan_in_fan_out == (arch == "gpt2")  # GPT-2's Conv1D stores weights transposed


def test_lora_targets_override_and_refusals(zoo, small_config, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model

    from tca4rec.cli import main
    from tca4rec.llm.lora import check_adapted, plan_lora

    gpt2 = _base_model(zoo["gpt2"])
    assert plan_lora(gpt2, ["attn.c_attn"], "gpt2").modules == ["transformer.h.0.attn.c_attn",
                                                                 "transformer.h.1.attn.c_attn"]
    # A bare "c_proj" is GPT-2's attention output *and* its MLP output: both are what it names.
    assert _layer_suffixes(plan_lora(gpt2, ["c_proj"], "gpt2").modules) == {"attn.c_proj", "mlp.c_proj"}
    with pytest.raises(ConfigError, match=r"--lora-targets q_proj: matches no module.*attn\.c_attn, attn\.c_proj"):
        plan_lora(gpt2, ["c_attn", "q_proj"], "gpt2")
    with pytest.raises(ConfigError, match=r"matches transformer\.h\.0\.ln_1, a LayerNorm; LoRA adapts linear"):
        plan_lora(gpt2, ["ln_1"], "gpt2")
    # The old fixed list on Phi-3 would have adapted o_proj alone: refused, naming the fused projection.
    with pytest.raises(ConfigError, match=r"q_proj: matches no module of Phi3ForCausalLM.*self_attn\.qkv_proj"):
        plan_lora(_base_model(zoo["phi3"]), ["q_proj", "k_proj", "v_proj", "o_proj"], "phi3")

    # peft adapting another set than the plan names is refused, not trained.
    plan = plan_lora(gpt2, ["attn.c_attn"], "gpt2")
    wrapped = get_peft_model(gpt2, LoraConfig(r=2, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True))
    with pytest.raises(ConfigError, match="a different set of modules"):
        check_adapted(wrapped, plan, "gpt2")

    # From the command line: one line, no traceback; and an override that works.
    config = small_config(tmp_path / "bad", llm=str(zoo["gpt_neox"]))
    base = ["train", "--data", config.data, "--llm", config.llm, "--alpha", "0", "--max-steps", "1",
            "--eval-rows", "0", "--batch-size", "2", "--grad-accum", "1", "--train-limit", "2"]
    assert main(base + ["--out", str(tmp_path / "bad"), "--lora-targets", "q_proj", "v_proj"]) == 2
    err = _error_line(capsys.readouterr().err)
    assert "--lora-targets q_proj: matches no module" in err
    assert "attention.query_key_value" in err
    assert main(base + ["--out", str(tmp_path / "ok"), "--lora-targets", "query_key_value"]) == 0
    out = capsys.readouterr().out
    assert "GPTNeoXForCausalLM (float32): LoRA on 2 modules (query_key_value)" in out
    report = json.loads((tmp_path / "ok" / "llm.json").read_text())
    assert _layer_suffixes(report["lora_modules"]) == {"attention.query_key_value"}


def test_run_from_before_per_architecture_targets_resumes(small_config, tmp_path):
    """Older runs stored the fixed list q/k/v/o_proj; --resume keeps it and loads their checkpoints."""
    from tca4rec.llm.train import train

    config = small_config(tmp_path / "run", max_steps=2)
    run_dir = train(config)
    old = _killed_after_first_checkpoint(run_dir, tmp_path / "old")
    record = json.loads((old / "config.json").read_text())
    record["config"]["lora_targets"] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    (old / "config.json").write_text(json.dumps(record))
    train(dataclasses.replace(config, out=str(old)), resume=True)
    assert json.loads((old / "llm.json").read_text())["lora_targets"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    resumed, uninterrupted = adapter_tensors(old), adapter_tensors(run_dir)
    assert resumed.keys() == uninterrupted.keys()
    for key, value in resumed.items():
        torch.testing.assert_close(value, uninterrupted[key], atol=1e-6, rtol=0)


# ---- what --llm accepts, and what it refuses ------------------------------------------------

def test_unsupported_folders_are_one_line_errors(zoo, small_config, tmp_path, capsys):
    from transformers import BertConfig, T5Config

    from tca4rec.cli import main
    from tca4rec.llm.model import resolve_llm

    bert = tmp_path / "bert"
    BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2).save_pretrained(bert)
    t5 = tmp_path / "t5"
    T5Config(vocab_size=64, d_model=16, num_layers=1, num_heads=2).save_pretrained(t5)
    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(zoo["qwen2"], no_tokenizer, ignore=shutil.ignore_patterns("tokenizer*", "*.jinja"))
    no_weights = tmp_path / "no_weights"
    shutil.copytree(zoo["qwen2"], no_weights, ignore=shutil.ignore_patterns("*.safetensors"))
    cases = {bert: "bert is an encoder-only model", t5: "t5 is an encoder-decoder model",
             no_tokenizer: "no tokenizer in the folder", no_weights: "no weights",
             tmp_path / "missing": "not a local Hugging Face model folder",
             tmp_path / "missing.gguf": "no such GGUF file"}
    for path, reason in cases.items():
        with pytest.raises(ConfigError, match=re.escape(f"--llm {path}: ") + ".*" + re.escape(reason)):
            resolve_llm(path)
    config = small_config(tmp_path / "run")
    assert main(["train", "--data", config.data, "--out", str(tmp_path / "run"), "--llm", str(bert)]) == 2
    err = _error_line(capsys.readouterr().err)
    assert str(bert) in err and "encoder-only" in err


def test_a_context_too_short_for_prompt_and_title_is_one_line(zoo, small_config, tmp_path, capsys):
    """GPT-2's learned position table used to fail as torch's "IndexError: index out of range in self"."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config

    from tca4rec.cli import main

    from .conftest import cli_train_args

    short = tmp_path / "gpt2_32"
    config = GPT2Config.from_pretrained(zoo["gpt2"])
    config.n_positions = 32
    AutoModelForCausalLM.from_config(config).save_pretrained(short)
    AutoTokenizer.from_pretrained(zoo["gpt2"]).save_pretrained(short)
    assert main(cli_train_args(small_config(tmp_path / "run", llm=str(short)))) == 2
    err = capsys.readouterr().err  # the error line may follow the progress bar's carriage return
    assert "Traceback" not in err and err.count("error: ") == 1
    assert re.search(r"a prompt of \d+ tokens and the longest title \(\d+ tokens\) need \d+ positions, but the "
                     r"model reads at most 32", err), err


def test_half_precision_folder_loads_in_float32_on_cpu(zoo, tmp_path):
    from transformers import AutoModelForCausalLM

    from tca4rec.llm.model import llm_dtype, load_causal_lm

    stored = AutoModelForCausalLM.from_pretrained(zoo["llama"], dtype=torch.bfloat16)
    stored.save_pretrained(tmp_path / "bf16")
    (tmp_path / "bf16" / "tokenizer.json").write_bytes((zoo["llama"] / "tokenizer.json").read_bytes())
    loaded = load_causal_lm(tmp_path / "bf16")
    if not torch.cuda.is_available():
        assert llm_dtype() == torch.float32
    assert loaded.dtype == llm_dtype()
    for name, weight in stored.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], weight.to(loaded.dtype)), name


def _byte_level_bpe(corpus: list[str]):
    """A small GPT-2 style byte-level BPE trained on ``corpus`` (a GGUF of 49k tokens converts slowly)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return json.loads(backend.to_str())["model"]


def _write_tiny_gguf(path, corpus: list[str], seed: int) -> dict:
    """A 2-layer llama GGUF (F32) with a byte-level BPE tokenizer; returns its tensors and vocabulary."""
    import gguf
    import numpy as np

    bpe = _byte_level_bpe(corpus)
    tokens = sorted(bpe["vocab"], key=bpe["vocab"].get)
    merges = [m if isinstance(m, str) else " ".join(m) for m in bpe["merges"]]
    writer = gguf.GGUFWriter(str(path), "llama")
    width, ffn, layers = 32, 64, 2
    writer.add_context_length(1024)
    writer.add_embedding_length(width)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t == "<|endoftext|>" else gguf.TokenType.NORMAL
                            for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(bpe["vocab"]["<|endoftext|>"])
    writer.add_eos_token_id(bpe["vocab"]["<|endoftext|>"])
    rng = np.random.default_rng(seed)
    tensors = {"token_embd.weight": rng.normal(0, 0.02, (len(tokens), width)), "output_norm.weight": np.ones(width)}
    shapes = {"attn_q": (width, width), "attn_k": (16, width), "attn_v": (16, width), "attn_output": (width, width),
              "ffn_gate": (ffn, width), "ffn_up": (ffn, width), "ffn_down": (width, ffn)}
    for i in range(layers):
        tensors |= {f"blk.{i}.{k}.weight": rng.normal(0, 0.02, s) for k, s in shapes.items()}
        tensors |= {f"blk.{i}.attn_norm.weight": np.ones(width), f"blk.{i}.ffn_norm.weight": np.ones(width)}
    tensors = {k: v.astype(np.float32) for k, v in tensors.items()}
    for name, value in tensors.items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"tensors": tensors, "vocab": bpe["vocab"]}


def test_gguf_file_is_converted_once_keyed_by_its_hash(small_config, synth_dataset, tmp_path, monkeypatch, capsys):
    from tca4rec.cli import main
    from tca4rec.io import file_sha256
    from tca4rec.llm import model as model_module
    from tca4rec.llm.model import load_causal_lm, load_tokenizer, resolve_llm

    monkeypatch.setenv("TCA4REC_CACHE", str(tmp_path / "cache"))
    gguf_file = tmp_path / "tiny.gguf"
    corpus = list(synth_dataset.titles[1:]) + ["### Instruction: Response: History: User"]
    written = _write_tiny_gguf(gguf_file, corpus, seed=0)
    folder = resolve_llm(gguf_file)
    assert folder == tmp_path / "cache" / "models" / f"gguf-{file_sha256(gguf_file)[:16]}"
    llm = load_causal_lm(gguf_file)
    assert type(llm).__name__ == "LlamaForCausalLM" and llm.config.num_hidden_layers == 2
    torch.testing.assert_close(llm.get_input_embeddings().weight,
                               torch.from_numpy(written["tensors"]["token_embd.weight"]))
    tok = load_tokenizer(gguf_file)
    assert tok.get_vocab() == written["vocab"] and tok.decode(tok(corpus[0]).input_ids) == corpus[0]

    # Converted once: later loads read the cached folder.
    def no_second_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(model_module, "convert_gguf", no_second_conversion)
    assert resolve_llm(gguf_file) == folder
    config = small_config(tmp_path / "run")
    assert main(["train", "--data", config.data, "--out", str(tmp_path / "run"), "--llm", str(gguf_file),
                 "--alpha", "0", "--max-steps", "1", "--eval-rows", "0", "--batch-size", "2", "--grad-accum", "1",
                 "--train-limit", "2"]) == 0
    assert "LlamaForCausalLM (float32): LoRA on 8 modules" in capsys.readouterr().out
    monkeypatch.undo()

    # Other content, other key; a file transformers cannot read is a one-line error naming it.
    monkeypatch.setenv("TCA4REC_CACHE", str(tmp_path / "cache"))
    other = tmp_path / "other.gguf"
    _write_tiny_gguf(other, corpus, seed=1)
    assert resolve_llm(other) != folder
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file at all")
    with pytest.raises(ConfigError, match=re.escape(f"--llm {broken}: transformers cannot load this GGUF file")):
        resolve_llm(broken)


def test_a_conversion_that_loses_a_race_uses_the_winners_folder(tmp_path, monkeypatch):
    """Two processes converting the same GGUF at once (parallel cells on a fresh machine): the
    second's rename fails onto the first's complete folder, which it then uses; a failed rename
    with no complete folder there is still an error."""
    from tca4rec.io import atomic_dir, file_sha256
    from tca4rec.llm import model as model_module
    from tca4rec.llm.model import resolve_llm

    monkeypatch.setenv("TCA4REC_CACHE", str(tmp_path / "cache"))
    gguf_file = tmp_path / "race.gguf"
    gguf_file.write_bytes(b"weights")

    def convert_after_the_winner(gguf, dest, complete=True):
        dest.mkdir(parents=True)
        (dest / ("config.json" if complete else "partial")).write_text("{}")  # the other process's folder
        with atomic_dir(dest) as tmp:  # this process's own conversion, renamed last
            (tmp / "config.json").write_text("{}")

    monkeypatch.setattr(model_module, "convert_gguf", convert_after_the_winner)
    assert resolve_llm(gguf_file) == tmp_path / "cache" / "models" / f"gguf-{file_sha256(gguf_file)[:16]}"

    other = tmp_path / "other.gguf"
    other.write_bytes(b"other weights")
    monkeypatch.setattr(model_module, "convert_gguf", lambda g, d: convert_after_the_winner(g, d, complete=False))
    with pytest.raises(OSError):
        resolve_llm(other)
