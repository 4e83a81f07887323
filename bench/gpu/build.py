"""Random-weight models with the real architectures, built where they run (no hub there).

Speed does not depend on the weights, so these time like the real checkpoints:
  llava_15_7b(dir)   LLaVA-1.5-7B: CLIP ViT-L/14 336 px + Llama 4096/11008/32 layers, vocab 32064,
                     saved with a 32064-word tokenizer and the llava-1.5 chat template, fp16
  llava_next_7b(dir) llava-v1.6-mistral-7b: the same CLIP on its any-resolution grid + Mistral
                     4096/14336/32 layers, 8 key/value heads, MistralConfig's default 4,096-token
                     sliding window (the case that recorded CUDA graphs at users' turns), fp16
  onevision_05b(dir, dtype)  llava-onevision-qwen2-0.5b: SigLIP so400m 384 px (26 layers) +
                     Qwen2 896/4864/24 layers, vocab 152,000, anyres_max_9 on 384-px tiles; fp16 on
                     CUDA, fp32 on the CPU (the CPU default's real size: 894 M parameters)
  whisper(path, size) openai-whisper checkpoints (medium, large-v3-turbo) in its own format
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.tiny_llava import LLAVA_15_CHAT_TEMPLATE

LLAVA_VOCAB = 32064
IMAGE_TOKEN_ID = 32000
WHISPER_DIMS = {  # openai-whisper ModelDimensions of the released checkpoints
    "medium": dict(n_mels=80, n_audio_ctx=1500, n_audio_state=1024, n_audio_head=16, n_audio_layer=24,
                   n_vocab=51865, n_text_ctx=448, n_text_state=1024, n_text_head=16, n_text_layer=24),
    "tiny": dict(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,  # gpu_turn --quick
                 n_vocab=51865, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4),
    "large-v3-turbo": dict(n_mels=128, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20, n_audio_layer=32,
                           n_vocab=51866, n_text_ctx=448, n_text_state=1280, n_text_head=20, n_text_layer=4),
}
# Words of the random tokenizer: a few real ones with punctuation (so that sentence ends can occur),
# the rest pronounceable made-up words of two or three syllables, so that TTS takes as long as for words.
WORDS = ["the", "a", "picture", "shows", "red", "car", "dog", "sky", "is", "and", ".", ",", "!", "?"]
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def made_up_words(count: int) -> list[str]:
    words = [a + b for a in SYLLABLES for b in SYLLABLES]
    words += [a + b + c for a in SYLLABLES[:40] for b in SYLLABLES for c in SYLLABLES[:10]]
    return words[:count]


def tokenizer(vocab_size: int = LLAVA_VOCAB, image_id: int = IMAGE_TOKEN_ID, specials=("<unk>", "<s>", "</s>"),
              tail=("<image>", "<pad>"), **names):
    """A word-level tokenizer of vocab_size words: specials first, then real and made-up words up to
    image_id, then tail (the image token, the padding, the family's chat tokens) from image_id on."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = list(specials) + WORDS + made_up_words(image_id - len(specials) - len(WORDS))
    vocab = {w: i for i, w in enumerate(words)}
    for i, token in enumerate(tail):
        vocab[token] = image_id + i
    for i in range(image_id + len(tail), vocab_size):
        vocab[f"x{i}"] = i
    raw = Tokenizer(models.WordLevel(vocab, unk_token=specials[0]))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    raw.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    raw.add_special_tokens([AddedToken(t, special=True) for t in (*specials, *tail)])
    names = names or {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    return PreTrainedTokenizerFast(tokenizer_object=raw, extra_special_tokens={"image_token": "<image>"}, **names)


def llava_15_7b(path: str | Path) -> Path:
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    try:
        from transformers import CLIPImageProcessorFast as ImageProcessor  # torchvision: what AutoProcessor picks
    except ImportError:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    path = Path(path)
    words = tokenizer()
    processor = LlavaProcessor(
        image_processor=ImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}),
        tokenizer=words, patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_15_CHAT_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                       num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768),
        text_config=LlamaConfig(vocab_size=LLAVA_VOCAB, hidden_size=4096, intermediate_size=11008,
                                num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                                max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=IMAGE_TOKEN_ID + 1),
        image_token_index=IMAGE_TOKEN_ID, vision_feature_layer=-2, vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        with torch.device("cuda"):
            model = LlavaForConditionalGeneration(config).eval()
            for parameter in model.parameters():  # small weights, as trained ones are: no inf in fp16
                torch.nn.init.normal_(parameter, std=0.02)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    del model
    torch.cuda.empty_cache()
    return path


def _clip_l_336():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                            image_size=336, patch_size=14, projection_dim=768)


def _save_random(model_class, config, processor, path: Path, device: str, dtype) -> Path:
    """Random weights (small, as trained ones are: no inf in fp16), saved with the processor."""
    import torch

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_class(config).eval()
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.normal_(std=0.02)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return Path(path)


NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def llava_next_7b(path: str | Path, device: str = "cuda") -> Path:
    import torch
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
        MistralConfig,
    )

    from tests.tiny_llava import LLAVA_NEXT_MISTRAL_CHAT_TEMPLATE

    words = tokenizer()
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                                   image_grid_pinpoints=NEXT_PINPOINTS),
        tokenizer=words, patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_NEXT_MISTRAL_CHAT_TEMPLATE,
    )
    config = LlavaNextConfig(
        vision_config=_clip_l_336(),
        text_config=MistralConfig(vocab_size=LLAVA_VOCAB, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                  num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
                                  rope_theta=1e6, bos_token_id=1, eos_token_id=2, pad_token_id=IMAGE_TOKEN_ID + 1),
        image_token_index=IMAGE_TOKEN_ID, image_grid_pinpoints=NEXT_PINPOINTS, vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    return _save_random(LlavaNextForConditionalGeneration, config, processor, Path(path), device, torch.float16)


ONEVISION_VOCAB, ONEVISION_IMAGE_ID = 152000, 151646
ONEVISION_PINPOINTS = [[384 * rows, 384 * cols] for rows in range(1, 7) for cols in range(1, 7)]


def onevision_05b(path: str | Path, device: str = "cuda", dtype=None) -> Path:
    import torch
    import transformers as tf

    from tests.tiny_llava import ONEVISION_CHAT_TEMPLATE, _add_video_processor

    class WithoutVideo(tf.LlavaOnevisionProcessor):  # its video processor needs torchvision; the app sends no video
        @classmethod
        def get_attributes(cls):
            return [name for name in super().get_attributes() if name != "video_processor"]

    words = tokenizer(ONEVISION_VOCAB, ONEVISION_IMAGE_ID, specials=("<|endoftext|>",),
                      tail=("<image>", "<video>", "<|im_start|>", "<|im_end|>"),
                      eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    processor = WithoutVideo(
        image_processor=tf.LlavaOnevisionImageProcessorPil(size={"height": 384, "width": 384},
                                                        image_grid_pinpoints=ONEVISION_PINPOINTS,
                                                        image_mean=[0.5] * 3, image_std=[0.5] * 3),
        tokenizer=words, num_image_tokens=729, vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9",
        chat_template=ONEVISION_CHAT_TEMPLATE,
    )
    config = tf.LlavaOnevisionConfig(
        vision_config=tf.SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26,
                                         num_attention_heads=16, image_size=384, patch_size=14, vision_use_head=False),
        text_config=tf.Qwen2Config(vocab_size=ONEVISION_VOCAB, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                                rope_theta=1e6, tie_word_embeddings=True, eos_token_id=ONEVISION_IMAGE_ID + 3,
                                pad_token_id=0),
        image_token_index=ONEVISION_IMAGE_ID, video_token_index=ONEVISION_IMAGE_ID + 1,
        image_grid_pinpoints=ONEVISION_PINPOINTS, vision_feature_layer=-1, vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9", use_image_newline_parameter=True, tie_word_embeddings=True,
    )
    dtype = dtype or (torch.float16 if device == "cuda" else torch.float32)
    path = _save_random(tf.LlavaOnevisionForConditionalGeneration, config, processor, Path(path), device, dtype)
    _add_video_processor(path)  # named as the real checkpoint names it, with its video processor's entry
    saved = json.loads((path / "processor_config.json").read_text())
    saved["video_processor"]["size"] = {"height": 384, "width": 384}
    (path / "processor_config.json").write_text(json.dumps(saved, indent=2))
    return path


def whisper(path: str | Path, size: str) -> Path:
    import torch
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(**WHISPER_DIMS[size])
    torch.manual_seed(0)
    model = Whisper(dims).half()
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    torch.save({"dims": dims.__dict__, "model_state_dict": model.state_dict()}, path)
    return Path(path)
