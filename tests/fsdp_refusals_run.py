"""SwitchLoRA and SST on fully_shard-ed models, 2 gloo ranks: their steppers refuse; run by test_fsdp_refusals.py."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fsdp_launch import init_rank, shard, tiny_llama, write_rank  # noqa: E402
from peft import get_peft_model  # noqa: E402

from hf_pept import SSTConfig, SSTStepper, SwitchLoRAConfig, SwitchLoRAStepper  # noqa: E402


def attempt(make_stepper, model, optimizer) -> str:
    try:
        make_stepper(model, optimizer)
    except ValueError as error:
        return str(error)
    return ""


def main(out: str) -> None:
    rank, _ = init_rank()
    messages = {}
    for name, config, make_stepper in (
        ("switchlora", SwitchLoRAConfig(r=4), lambda m, o: SwitchLoRAStepper(m, o, total_steps=10)),
        ("sst", SSTConfig(r=4, iteration_steps=3, iteration_warmup_steps=1), lambda m, o: SSTStepper(m, o)),
    ):
        model = get_peft_model(tiny_llama(), config)
        llama = model.base_model.model
        shard(llama, llama.model.layers)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
        messages[name] = attempt(make_stepper, model, optimizer)
    write_rank(Path(out), rank, messages)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
