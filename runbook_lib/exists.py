"""Section 1's last check: every name the parameters give exists, before any step reads or writes.

Each miss is one sentence naming the parameter, the name and where it was looked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runbook_lib.ecs import describe_service
from runbook_lib.errors import NotFound
from runbook_lib.params import Params

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_iam import IAMClient


def _missing(param: str, what: str, where: str) -> NotFound:
    return NotFound(f"parameter {param!r}: {what} does not exist in {where}.", param)


def check_names(
    iam: IAMClient, ecs: ECSClient, ddb: DynamoDBClient, params: Params, account: str
) -> dict[str, str]:
    """Look up the roles, the cluster and service, the table and its index.

    Returns what was found (for the record).
    """
    where = f"account {account}"
    found: dict[str, str] = {}
    for param in ("task_role", "execution_role"):
        name = getattr(params, param)
        try:
            found[param] = iam.get_role(RoleName=name)["Role"]["Arn"]
        except iam.exceptions.NoSuchEntityException:
            raise _missing(param, f"role {name!r}", where) from None
    region_where = f"{where}, region {params.region}"
    try:
        svc = describe_service(ecs, params.cluster, params.service)
    except NotFound as exc:
        # Which account and region were searched: a cluster "missing" is often the wrong region.
        message = f"parameter {exc.param!r}: {str(exc).rstrip('.')} ({region_where})."
        raise NotFound(message, exc.param) from None
    found["service"] = svc.name
    try:
        table = ddb.describe_table(TableName=params.table)["Table"]
    except ddb.exceptions.ResourceNotFoundException:
        raise _missing("table", f"DynamoDB table {params.table!r}", region_where) from None
    found["table"] = table["TableArn"]
    indexes = [i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])]
    indexes += [i["IndexName"] for i in table.get("LocalSecondaryIndexes", [])]
    if params.index not in indexes:
        raise NotFound(
            f"parameter 'index': table {params.table!r} has no index {params.index!r} "
            f"(it has: {', '.join(indexes) or 'none'})."
        )
    found["index"] = params.index
    return found
