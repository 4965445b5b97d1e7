"""Train/serve template consistency: training's ids for probe chats are recorded in
final/ and every later rendering (saved tokenizer, server, exports) must reproduce them."""

from __future__ import annotations

import copy
import json

import pytest

from tunesmith.data.template import tokenize_chat, with_system_prompt
from tunesmith.data.template_check import (PROBE_ANSWER, PROBE_CHATS, check_template, training_prompt_ids,
                                           write_template_probes)
from tunesmith.errors import ModelError
from tunesmith.synthetic import make_lora_run


@pytest.fixture()
def tokenizer(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def test_training_ids_are_what_the_loss_path_puts_before_the_answer(tokenizer):
    chat = PROBE_CHATS[1]
    ids = training_prompt_ids(tokenizer, chat, "Be brief.")
    whole = tokenize_chat(tokenizer, with_system_prompt(chat, "Be brief.") + [
        {"role": "assistant", "content": PROBE_ANSWER}], 10_000, last_turn_only=True)
    assert whole["input_ids"][: len(ids)] == ids
    assert whole["labels"][len(ids)] != -100 and set(whole["labels"][: len(ids)]) == {-100}
    assert tokenizer.convert_ids_to_tokens(ids[-2:]) == ["<|im_start|>", "assistant"]


def test_the_same_tokenizer_passes_and_a_changed_template_is_named_at_its_first_token(tokenizer, tmp_path):
    write_template_probes(tmp_path, tokenizer, "Be brief.")
    assert check_template(tmp_path, tokenizer, "serving") == len(PROBE_CHATS)

    wrong = copy.deepcopy(tokenizer)  # a template that writes "Assistant:" instead of ChatML's header
    wrong.chat_template = tokenizer.chat_template.replace("<|im_start|>assistant\n", "Assistant: ")
    assert wrong.chat_template != tokenizer.chat_template
    with pytest.raises(ModelError) as error:
        check_template(tmp_path, wrong, "serving")
    message = str(error.value)
    assert "probe conversation 1" in message
    assert "('<|im_start|>' in training, 'assistant' in serving)" in message
    assert "\ntraining: '" in message and "\nserving: '" in message  # both renderings shown


def test_a_lost_system_prompt_fails(tokenizer, tmp_path):
    write_template_probes(tmp_path, tokenizer, "Be brief.")
    recorded = json.loads((tmp_path / "template_probes.json").read_text())
    recorded["system_prompt"] = None  # as if the server forgot the run's system prompt
    (tmp_path / "template_probes.json").write_text(json.dumps(recorded))
    with pytest.raises(ModelError, match=r"token 1 \('system' in training, 'user' in serving\)"):
        check_template(tmp_path, tokenizer, "serving")


def test_the_server_refuses_a_run_whose_saved_template_was_changed(tmp_path, tiny_llama_dir):
    from tunesmith.serve.registry import Registry

    run = make_lora_run(tmp_path / "run", tiny_llama_dir, "causal_lm", seed=1, system_prompt="Be brief.")
    assert (run / "final" / "template_probes.json").is_file()
    Registry().add_run("good", run)  # loads: the saved template renders as training did
    config = run / "final" / "tokenizer_config.json"
    template_file = run / "final" / "chat_template.jinja"
    if template_file.is_file():
        template_file.write_text(template_file.read_text().replace("<|im_start|>", "<|im_end|>", 1))
    else:
        data = json.loads(config.read_text())
        data["chat_template"] = data["chat_template"].replace("<|im_start|>", "<|im_end|>", 1)
        config.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"(chat_template\.jinja|tokenizer_config\.json): content changed"):
        Registry().add_run("edited", run)  # the hashes written with the model catch the edit first
    from tunesmith.rundir import read_model_meta, write_model_meta

    write_model_meta(run / "final", read_model_meta(run / "final"))  # hashes re-recorded: the probes still catch it
    with pytest.raises(ModelError, match="used for serving renders probe conversation 1 differently"):
        Registry().add_run("edited", run)
