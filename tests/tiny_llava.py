"""Build a tiny LLaVA-family model with random weights, saved like a hub checkpoint, fully offline.

Three families, each with the processor and the chat template of its real checkpoint:

    llava-1.5    LlavaForConditionalGeneration: CLIP vision tower, Llama text model, one 336-px
                 crop (576 image tokens in the real model)                 llava-hf/llava-1.5-7b-hf
    llava-next   LlavaNextForConditionalGeneration (llava-v1.6): CLIP, Mistral text model, the image
                 tiled on an any-resolution grid (up to 2,928 tokens)  llava-hf/llava-v1.6-mistral-7b-hf
    onevision    LlavaOnevisionForConditionalGeneration: SigLIP vision tower, Qwen2 text model,
                 anyres_max_9 tiling (up to 8,154 tokens)       llava-hf/llava-onevision-qwen2-0.5b-ov-hf

The tiny ones keep each family's structure (the grid, the newline tokens, the feature selection)
at 32-px tiles of 8-px patches, so an image is 16 base tokens plus its tiles. Their answers are
random noise. They exist so that the whole app (and its tests) can run where no model can be
downloaded:  python -m tests.tiny_llava models/tiny-llava [--family onevision]  then
LLAVA_MODEL=models/tiny-llava. For real answers, leave LLAVA_MODEL unset (see README).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from core.engines.demo import mark_random

# The chat template of llava-hf/llava-1.5-7b-hf, as its processor ships it (llava-v1.6-vicuna ships
# the same one).
LLAVA_15_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}"
    "{% endfor %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# The chat template of llava-hf/llava-v1.6-mistral-7b-hf (its chat_template.json). Found in
# huggingface/optimum-intel, optimum/exporters/openvino/utils.py, COMPLEX_CHAT_TEMPLATES, entry
# "# llava-next" (the entry "# llava-next old" is the earlier revision that wrote '<\\s>' after a
# reply instead of '</s>'); openvinotoolkit/openvino.genai's tokenizer lists the same text as
# "tiny-random-llava-next, llava-v1.6-mistral (chat_template.json)". It has no generation prompt:
# a user turn ends with ' [/INST]' and the reply follows.
LLAVA_NEXT_MISTRAL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<<SYS>>\n' + message['content'][0]['text'] + '\n<</SYS>>\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'][0]['text'] + '</s> '}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}"
    "{% endfor %}"
)

# The chat template of llava-hf/llava-onevision-qwen2-0.5b-ov-hf: the one transformers' conversion
# script gave the llava-hf OneVision checkpoints (huggingface/transformers,
# src/transformers/models/llava_onevision/convert_llava_onevision_weights_to_hf.py, `chat_template`).
ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n'}}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all video then #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}"
    "{# Render all text next #}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] }}{% endgeneration %}"
    "{% endfor %}"
    "{% endif %}"
    "{{'<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

FAMILIES = ("llava-1.5", "llava-next", "onevision")
IMAGE_SIZE = 32  # pixels: the side of the base image and of each tile
PATCH_SIZE = 8  # pixels; a 32-px tile is 16 patches
# llava-v1.6's grid [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]] at 32-px tiles.
NEXT_PINPOINTS = [[32, 64], [64, 32], [64, 64], [96, 32], [32, 96]]
# OneVision's grid: every 1x1 ... 6x6 arrangement of 384-px tiles, here 32-px tiles.
ONEVISION_PINPOINTS = [[IMAGE_SIZE * rows, IMAGE_SIZE * cols] for rows in range(1, 7) for cols in range(1, 7)]
CONTEXT = {"llava-1.5": 2048, "llava-next": 1024, "onevision": 1024}  # max_position_embeddings
VOCAB_SIZE = 400
CORPUS = """
The picture shows a red car parked near a tall tree. A dog sits on the grass.
What is written on the sign? The sign says stop. There are two people and a cat.
Is it sunny? Yes, the sky is blue and clear. The table has a cup, a book and 3.5 apples.
Describe the image. It is a photo of a street at night, with lights and shops.
""".strip().splitlines()


def build_tiny_llava(path: str | Path, seed: int = 0, family: str = "llava-1.5") -> Path:
    """Write a tiny random model of family (one of FAMILIES) and its processor to path."""
    import torch

    builders = {"llava-1.5": _llava_15, "llava-next": _llava_next, "onevision": _onevision}
    if family not in builders:
        raise ValueError(f"unknown family {family!r}: one of {', '.join(FAMILIES)}")
    path = Path(path)
    torch.manual_seed(seed)
    model, processor = builders[family]()
    model.eval().save_pretrained(path)
    processor.save_pretrained(path)
    if family == "onevision":
        _add_video_processor(path)
    mark_random(path)  # the chat page tells its users that the answers are noise
    return path


def _tokenizer(specials: list[str], bos: str | None, eos: str, unk: str | None, pad: str, add_bos: bool = False,
               **extra: str):
    """A byte-level BPE trained on CORPUS with the family's special tokens (specials, in id order).
    extra: named special tokens the processor looks up (image_token, video_token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token=unk))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator(CORPUS, trainer=trainer)
    if add_bos:  # like Llama/Mistral tokenizers: <s> before every text
        raw.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, raw.token_to_id(bos))])
    names = {"bos_token": bos, "eos_token": eos, "unk_token": unk, "pad_token": pad}
    return PreTrainedTokenizerFast(tokenizer_object=raw, **{k: v for k, v in names.items() if v is not None},
                                   extra_special_tokens=extra)


def _text_sizes(tokenizer, context: int) -> dict:
    """The tiny text model's shape, shared by the families."""
    return dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=context, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def _vision_sizes() -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)


# llava-1.5 and v1.6 share the CLIP side: 336-px crops (here IMAGE_SIZE), no CLS token ("default"),
# the second-to-last layer's features.
CLIP_CROP = {"shortest_edge": IMAGE_SIZE}, {"height": IMAGE_SIZE, "width": IMAGE_SIZE}


def _clip_processor_args(tokenizer, chat_template: str) -> dict:
    return dict(tokenizer=tokenizer, patch_size=PATCH_SIZE, vision_feature_select_strategy="default",
                num_additional_image_tokens=1, chat_template=chat_template)


def _clip_config_args(tokenizer) -> dict:
    from transformers import CLIPVisionConfig

    return dict(vision_config=CLIPVisionConfig(**_vision_sizes()),
                image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                vision_feature_layer=-2, vision_feature_select_strategy="default")


def _llava_15():
    from transformers import (
        CLIPImageProcessorPil,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = _tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], "<s>", "</s>", "<unk>", "<pad>",
                           image_token="<image>")
    size, crop = CLIP_CROP
    processor = LlavaProcessor(image_processor=CLIPImageProcessorPil(size=size, crop_size=crop),
                               **_clip_processor_args(tokenizer, LLAVA_15_CHAT_TEMPLATE))
    config = LlavaConfig(
        text_config=LlamaConfig(**_text_sizes(tokenizer, CONTEXT["llava-1.5"]), num_key_value_heads=4),
        **_clip_config_args(tokenizer),
    )
    return LlavaForConditionalGeneration(config), processor


def _llava_next():
    """llava-v1.6-mistral: CLIP without its CLS token (feature layer -2), Mistral with grouped
    key/value heads and no sliding window (Mistral-7B-Instruct-v0.2), a <s> before every prompt."""
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
        MistralConfig,
    )

    tokenizer = _tokenizer(["<unk>", "<s>", "</s>", "<image>", "<pad>"], "<s>", "</s>", "<unk>", "<pad>",
                           add_bos=True, image_token="<image>")
    size, crop = CLIP_CROP
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessorPil(size=size, crop_size=crop, image_grid_pinpoints=NEXT_PINPOINTS),
        **_clip_processor_args(tokenizer, LLAVA_NEXT_MISTRAL_CHAT_TEMPLATE),
    )
    config = LlavaNextConfig(
        text_config=MistralConfig(**_text_sizes(tokenizer, CONTEXT["llava-next"]), num_key_value_heads=2,
                                  sliding_window=None),
        image_grid_pinpoints=NEXT_PINPOINTS,
        **_clip_config_args(tokenizer),
    )
    return LlavaNextForConditionalGeneration(config), processor


def _onevision():
    """llava-onevision-qwen2: SigLIP without its head, every patch kept ("full", last layer),
    Qwen2 with tied embeddings and ChatML tokens, no <s>; the reply ends with <|im_end|>."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        LlavaOnevisionProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    class WithoutVideo(LlavaOnevisionProcessor):  # LlavaOnevisionVideoProcessor needs torchvision: see _save
        @classmethod
        def get_attributes(cls):
            return [name for name in super().get_attributes() if name != "video_processor"]

    tokenizer = _tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"], None, "<|im_end|>",
                           None, "<|endoftext|>", image_token="<image>", video_token="<video>")
    processor = WithoutVideo(
        image_processor=LlavaOnevisionImageProcessorPil(
            size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_grid_pinpoints=ONEVISION_PINPOINTS,
        ),
        tokenizer=tokenizer,
        num_image_tokens=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=ONEVISION_CHAT_TEMPLATE,
    )
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**_vision_sizes(), vision_use_head=False),
        text_config=Qwen2Config(**_text_sizes(tokenizer, CONTEXT["onevision"]), num_key_value_heads=2,
                                tie_word_embeddings=True),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=ONEVISION_PINPOINTS,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        use_image_newline_parameter=True,
        tie_word_embeddings=True,
    )
    return LlavaOnevisionForConditionalGeneration(config), processor


def _add_video_processor(path: Path) -> None:
    """Name OneVision's video processor in processor_config.json, as the real checkpoint does.

    LlavaOnevisionVideoProcessor (and the base class the processor checks it against) needs
    torchvision, which cannot be installed beside the CPU torch here: the processor is built and
    saved without it, and its entry (the class defaults at this model's 32-px size) is written
    here. Where torchvision is missing, AutoProcessor fails on it exactly as it does on the real
    llava-hf/llava-onevision-qwen2-0.5b-ov-hf, and core.engines.vlm loads the processor without it.
    """
    import json

    file = path / "processor_config.json"
    saved = json.loads(file.read_text())
    saved["processor_class"] = "LlavaOnevisionProcessor"
    saved["video_processor"] = {
        "video_processor_type": "LlavaOnevisionVideoProcessor",
        "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "resample": 3,
        "image_mean": saved["image_processor"]["image_mean"],
        "image_std": saved["image_processor"]["image_std"],
        "rescale_factor": saved["image_processor"]["rescale_factor"],
        "default_to_square": False,
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "do_convert_rgb": True,
        "do_sample_frames": False,
    }
    file.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="folder to write the model into")
    parser.add_argument("--family", choices=FAMILIES, default="llava-1.5", help="which family (default: llava-1.5)")
    args = parser.parse_args()
    print(build_tiny_llava(args.path, family=args.family))


if __name__ == "__main__":
    main()
