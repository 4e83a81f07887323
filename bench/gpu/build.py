"""Random-weight models with the real architectures, built on the GPU machine (no hub there).

Speed does not depend on the weights, so these time like the real checkpoints:
  llava_15_7b(dir)   LLaVA-1.5-7B: CLIP ViT-L/14 336 px + Llama 4096/11008/32 layers, vocab 32064,
                     saved with a 32064-word tokenizer and the llava-1.5 chat template, fp16
  whisper(path, size) openai-whisper checkpoints (medium, large-v3-turbo) in its own format
"""

from __future__ import annotations

from pathlib import Path

from tests.tiny_llava import LLAVA_15_CHAT_TEMPLATE

LLAVA_VOCAB = 32064
IMAGE_TOKEN_ID = 32000
WHISPER_DIMS = {  # openai-whisper ModelDimensions of the released checkpoints
    "medium": dict(n_mels=80, n_audio_ctx=1500, n_audio_state=1024, n_audio_head=16, n_audio_layer=24,
                   n_vocab=51865, n_text_ctx=448, n_text_state=1024, n_text_head=16, n_text_layer=24),
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


def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    words = specials + WORDS + made_up_words(IMAGE_TOKEN_ID - len(specials) - len(WORDS))
    vocab = {w: i for i, w in enumerate(words)}
    vocab["<image>"] = IMAGE_TOKEN_ID
    vocab["<pad>"] = IMAGE_TOKEN_ID + 1
    for i in range(IMAGE_TOKEN_ID + 2, LLAVA_VOCAB):
        vocab[f"x{i}"] = i
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    raw.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})


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
