"""`hearth`: serve, set up and check a self-hosted LLM server."""

from __future__ import annotations

import click

from hearth import __version__
from hearth.cli.adapter import adapter
from hearth.cli.bench import bench
from hearth.cli.chat import chat
from hearth.cli.convert import convert, quantize_
from hearth.cli.create import create
from hearth.cli.doctor import doctor
from hearth.cli.keys import keys
from hearth.cli.models import import_, ls, outdated, pull, rm, rollback, show
from hearth.cli.ps import ps, unload
from hearth.cli.rpc_worker import rpc_worker
from hearth.cli.run import run
from hearth.cli.search import search
from hearth.cli.serve import serve
from hearth.cli.setup import setup
from hearth.cli.usage import usage


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", "-V", prog_name="hearth")
def cli() -> None:
    """Hearth: a self-hosted LLM server and gateway with an OpenAI-compatible API.

    \b
    Quick start:
      hearth setup     build the llama.cpp engine and prepare the bundled model (once)
      hearth serve     answer the OpenAI API on http://127.0.0.1:8080/v1
      hearth doctor    show what Hearth found and what is missing

    \b
    Models:
      hearth search QUERY              GGUF models on the Hub and which quantization fits
      hearth pull owner/repo[:QUANT]   download a GGUF model (no QUANT: the largest that fits)
      hearth import FILE.gguf          register a GGUF file you have
      hearth convert PATH|owner/repo   a Hugging Face checkpoint (safetensors) into GGUF
      hearth quantize NAME Q4_K_M      a smaller quantization of a stored model
      hearth ls | show NAME | rm NAME  list, inspect, remove
      hearth outdated                  pulled models with a newer revision on the Hub
      hearth pull --update NAME        fetch it (the old one kept as NAME@REV)
      hearth rollback NAME             serve the previous revision again
      hearth create NAME --from MODEL  a preset: a system prompt and defaults over a model
      hearth adapter add|ls|rm         LoRA adapters of a model, picked per request as MODEL+NAME
      hearth chat [MODEL]              chat in the terminal (streamed; /help inside)
      hearth run MODEL "prompt"        answer once, for scripts (reads stdin too)
      hearth ps        list the models a running Hearth has loaded
      hearth bench     load-test any OpenAI-compatible server (--url, --model)
      hearth rpc-worker  lend this machine's memory/GPU to a Hearth elsewhere (llama.cpp RPC)

    \b
    Access:
      hearth keys create --name N      an API key (printed once); keys ls | keys revoke
      hearth usage --by key --since 7d requests, tokens and cost
    """


cli.add_command(serve)
cli.add_command(setup)
cli.add_command(doctor)
for command in (search, pull, import_, ls, show, rm):
    cli.add_command(command)
cli.add_command(outdated)
cli.add_command(rollback)
cli.add_command(convert)
cli.add_command(quantize_)
cli.add_command(create)
cli.add_command(adapter)
cli.add_command(chat)
cli.add_command(run)
cli.add_command(ps)
cli.add_command(unload)
cli.add_command(bench)
cli.add_command(keys)
cli.add_command(usage)
cli.add_command(rpc_worker)


def main() -> None:
    cli()
