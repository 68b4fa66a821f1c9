"""archiveflow: a self-hosted web archiver built as a data pipeline.

One distribution, one import name. The repository keeps the layout's folders at its top
(flows/, tasks/, store/, deployments/, plugins/) and pyproject.toml maps them into this
package: `archiveflow.flows`, `archiveflow.tasks`, `archiveflow.store`,
`archiveflow.deployments`, with the built-in plugins shipped as `archiveflow/plugins`.
This folder itself holds the command line (`archiveflow.cli`) and the settings.
"""

from __future__ import annotations

__version__ = "0.1.0"
