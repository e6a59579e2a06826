"""gwsim and LiteLLM's proxy: a scenario's [router] as a LiteLLM proxy config and back
(``config``), and the real proxy measured under the scenario's traffic (``proxy``).

Nothing here imports LiteLLM: the config is plain YAML, and the proxy runs as its own process
from the optional extra ``gwsim[litellm]``.
"""
