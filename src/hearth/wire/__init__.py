"""The OpenAI-shaped requests and answers every deployment speaks: the one wire protocol inside
Hearth, shared by the protocol translators, the pipeline and routing."""
