"""`autotinybert extract`: write a sub-model of a supernet as a Hugging Face model folder."""

from __future__ import annotations

ORDER = 20


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "extract", help="extract a sub-model from a supernet into a save_pretrained folder",
        description="Slice ARCH out of a supernet folder and write config.json + model.safetensors (+ tokenizer "
                    "files when the supernet folder has them). Load it with transformers' AutoModel* after "
                    "`import autotinybert`, or with plain transformers when written with --plain-bert.")
    p.add_argument("--supernet", required=True, help="supernet folder (config.json + model.safetensors)")
    p.add_argument("--arch", required=True, help="L-dm-df-h-dqkv, e.g. 5-564-1054-8-512")
    p.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    p.add_argument("--head", default="mlm", choices=["mlm", "base"], help="model class to write (default: mlm)")
    p.add_argument("--plain-bert", action="store_true",
                   help="write model_type 'bert' (stock BertModel/BertForMaskedLM); needs qkv == hidden")
    p.add_argument("--allow-outside-space", action="store_true",
                   help="accept an arch that fits the supernet but is not on the search space's grid")
    p.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty --out folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..arch import Arch
    from ..extract import extract, save_extracted, to_plain_bert
    from ..io import TOKENIZER_FILES
    from ..supernet import SuperBertForMaskedLM

    arch = Arch.parse(args.arch)
    supernet = SuperBertForMaskedLM.from_pretrained(args.supernet)
    if not args.allow_outside_space:
        supernet.space.check(arch)
    model = extract(supernet, arch, head=args.head)
    if args.plain_bert:
        model = to_plain_bert(model)
    out = save_extracted(model, args.out, tokenizer_dir=args.supernet, overwrite=args.overwrite)
    has_tokenizer = any((out / name).exists() for name in TOKENIZER_FILES)
    print(f"wrote {arch} ({sum(p.numel() for p in model.parameters()):,} parameters) to {out}"
          f"{'' if has_tokenizer else ' (no tokenizer files in the supernet folder)'}")
    return 0
