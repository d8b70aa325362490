"""Site agent: the tool a site operator runs next to the site's private data.

Train a teacher locally, push only its modules (JSON spec + safetensors) to the coordinator's
registry, and evaluate transplanted nets on the local held-out data when the coordinator asks.
"""
from site_agent.errors import SiteAgentError


def start_site_agent(*args, **kwargs):  # noqa: ANN002, ANN003  (lazy: keeps `import site_agent` light)
    from site_agent.service import start_site_agent as start

    return start(*args, **kwargs)


__all__ = ["SiteAgentError", "start_site_agent"]
