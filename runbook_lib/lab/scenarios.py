"""Situations of real accounts the lab can play, each set up the way a user would set it up.

A scenario is the workshop's broken account plus what a real account may hand out (issue
"Real accounts"): changes made through AWS's public API on the started lab (the same
``register-task-definition``, ``update-service``, ``put-role-permissions-boundary`` a user would
type), fault knobs where the situation is AWS's own behaviour (eventual consistency, log pages),
or a region. A lab set up by hand through the API behaves the same as one that chose the scenario
by name: the scenario code holds no behaviour of its own, only the calls.

Choose one with ``LabConfig(scenario=NAME)`` or ``python -m runbook_lib.lab serve --scenario
NAME``. :data:`SCENARIOS` lists them; each names the AWS document or model field it follows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runbook_lib.lab_keys import LAB_ACCESS_KEY, LAB_SECRET_KEY

#: The workshop as it is (no change): the default.
DEFAULT = "workshop"

#: Names of the boundary policy and of the other inline policy the scenarios write.
BOUNDARY_POLICY = "RetailStoreTaskRoleBoundary"
OTHER_POLICY = "RetailStoreCartsTableAccess"
#: The FireLens log router of the sidecar scenario (the image AWS publishes for FireLens).
LOG_ROUTER = "log_router"
LOG_ROUTER_IMAGE = "public.ecr.aws/aws-observability/aws-for-fluent-bit:stable"

#: What ``RegisterTaskDefinition`` does not take back from ``DescribeTaskDefinition``.
_READ_ONLY = (
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
)


class Api:
    """What a scenario's set-up may use: boto3 clients on the lab, as a user would make them
    (in an organization's member, through the role ``role_arn`` the management account assumes),
    the workshop's names, and a wait that lets the lab's time pass until something holds."""

    def __init__(
        self,
        endpoint_url: str,
        region: str,
        params: Any,
        until: Callable[[str, Callable[[], bool]], None],
        role_arn: str | None = None,
    ) -> None:
        import boto3

        session = boto3.Session(
            aws_access_key_id=LAB_ACCESS_KEY,
            aws_secret_access_key=LAB_SECRET_KEY,
            region_name=region,
        )
        if role_arn:
            # An organization's member: its management account's way in (AssumeRole, as the
            # organization's admin would; the keys act in the role's account).
            creds = session.client("sts", endpoint_url=endpoint_url).assume_role(
                RoleArn=role_arn, RoleSessionName="lab-scenario"
            )["Credentials"]
            session = boto3.Session(
                aws_access_key_id=creds["AccessKeyId"],
                aws_secret_access_key=creds["SecretAccessKey"],
                aws_session_token=creds["SessionToken"],
                region_name=region,
            )
        self._session: Any = session
        self._endpoint_url = endpoint_url
        self._clients: dict[str, Any] = {}
        self.params = params
        self.until = until

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self._session.client(service, endpoint_url=self._endpoint_url)
        return self._clients[service]

    @property
    def ecs(self) -> Any:
        return self.client("ecs")

    @property
    def iam(self) -> Any:
        return self.client("iam")

    @property
    def ec2(self) -> Any:
        return self.client("ec2")

    def service(self) -> dict[str, Any]:
        p = self.params
        found: dict[str, Any] = self.ecs.describe_services(cluster=p.cluster, services=[p.service])[
            "services"
        ][0]
        return found

    def carts_definition(self) -> dict[str, Any]:
        """The service's task definition as ``RegisterTaskDefinition`` takes it back."""
        arn = self.service()["taskDefinition"]
        described = self.ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        return {k: v for k, v in described.items() if k not in _READ_ONLY}

    def register_and_deploy(self, definition: dict[str, Any]) -> str:
        """``register-task-definition`` then ``update-service --task-definition``: a new
        deployment of the new revision; returns its ARN."""
        arn: str = self.ecs.register_task_definition(**definition)["taskDefinition"][
            "taskDefinitionArn"
        ]
        p = self.params
        self.ecs.update_service(cluster=p.cluster, service=p.service, taskDefinition=arn)
        return arn


def stopped_of(api: Api, arn: str, count: int) -> Callable[[], bool]:
    """A check: ``count`` tasks of the task definition ``arn`` have stopped."""
    p = api.params

    def check() -> bool:
        listed = api.ecs.list_tasks(
            cluster=p.cluster, serviceName=p.service, desiredStatus="STOPPED"
        )["taskArns"]
        if not listed:
            return False
        tasks = api.ecs.describe_tasks(cluster=p.cluster, tasks=listed)["tasks"]
        done = [t for t in tasks if t["taskDefinitionArn"] == arn and t["lastStatus"] == "STOPPED"]
        return len(done) >= count

    return check


# --- the set-ups ---------------------------------------------------------------------------------


def no_health_check(api: Api) -> None:
    """A revision of carts without ``healthCheck``, the service updated to it. Its tasks run
    with ``healthStatus`` UNKNOWN: "If health checks aren't configured for this container in
    its task definition, then it reports the health status as UNKNOWN" (bc:ecs
    ``Container.healthStatus``)."""
    definition = api.carts_definition()
    for container in definition["containerDefinitions"]:
        container.pop("healthCheck", None)
    arn = api.register_and_deploy(definition)
    api.until("two tasks of the revision without a health check to fail", stopped_of(api, arn, 2))


def already_fixed(api: Api) -> None:
    """Another inline policy on the task role grants DynamoDB (somebody fixed it by hand);
    carts then runs HEALTHY and its deployment COMPLETED."""
    p = api.params
    from runbook_lib.partitions import arn

    document = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["dynamodb:*"],
                "Resource": [arn("dynamodb", p.region, p.lab_account_id, "table/*")],
            }
        ],
    }
    api.iam.put_role_policy(
        RoleName=p.task_role, PolicyName=OTHER_POLICY, PolicyDocument=json.dumps(document)
    )

    def healthy_and_completed() -> bool:
        service = api.service()
        primary = service["deployments"][0]
        return bool(primary.get("rolloutState") == "COMPLETED" and service["runningCount"] >= 1)

    api.until("carts to run HEALTHY and its deployment to complete", healthy_and_completed)


def permissions_boundary(api: Api) -> None:
    """A permissions boundary on the task role that allows no DynamoDB action: whatever the
    identity policies grant, "the intersection of the two categories" (IAM User Guide,
    access_policies_boundaries.html) leaves carts denied, with AWS's sentence "... because no
    permissions boundary allows the dynamodb:Query action" (troubleshoot_access-denied.html)."""
    p = api.params
    boundary = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TaskRoleCeiling",
                "Effect": "Allow",
                "Action": ["ssmmessages:*", "elasticfilesystem:Client*", "logs:*", "s3:Get*"],
                "Resource": "*",
            }
        ],
    }
    created = api.iam.create_policy(
        PolicyName=BOUNDARY_POLICY,
        PolicyDocument=json.dumps(boundary),
        Description="Ceiling for the retail store's task roles",
    )
    api.iam.put_role_permissions_boundary(
        RoleName=p.task_role, PermissionsBoundary=created["Policy"]["Arn"]
    )


def circuit_breaker(api: Api) -> None:
    """The deployment circuit breaker on, without rollback, and a new deployment under it: after
    ``clamp(ceil(0.5 * desired), 3, 200)`` failed tasks the deployment is FAILED and "doesn't
    launch any new tasks" (bc:ecs ``DeploymentCircuitBreaker``, ``Deployment.rolloutState``;
    AWS-FACTS 1)."""
    p = api.params
    api.ecs.update_service(
        cluster=p.cluster,
        service=p.service,
        deploymentConfiguration={
            "deploymentCircuitBreaker": {"enable": True, "rollback": False},
            "maximumPercent": 200,
            "minimumHealthyPercent": 100,
        },
        forceNewDeployment=True,
    )

    def failed() -> bool:
        return bool(api.service()["deployments"][0].get("rolloutState") == "FAILED")

    api.until("the circuit breaker to fail the deployment", failed)


def no_stream_prefix(api: Api) -> None:
    """carts on the EC2 launch type, its ``awslogs`` driver without ``awslogs-stream-prefix``
    ("Required: Yes, when using Fargate. Optional when using EC2"), so each log stream "is named
    after the container ID that's assigned by the Docker daemon" (bc:ecs
    ``LogConfiguration.options``; AWS-FACTS 3). Set up as a user would: an instance registered
    in the cluster, the service deleted and created again on EC2 (``UpdateService`` cannot change
    the launch type)."""
    p = api.params
    service = api.service()
    network = service["networkConfiguration"]["awsvpcConfiguration"]
    # The ECS-optimized Amazon Linux 2 AMI, as the ECS console's EC2 capacity chooses.
    images = api.ec2.describe_images(
        Owners=["amazon"], Filters=[{"Name": "name", "Values": ["amzn2-ami-ecs-hvm-*"]}]
    )["Images"]
    image = max(images, key=lambda i: i["CreationDate"])["ImageId"]
    instance = api.ec2.run_instances(
        ImageId=image,
        InstanceType="m5.large",
        MinCount=1,
        MaxCount=1,
        SubnetId=network["subnets"][0],
        SecurityGroupIds=network["securityGroups"],
    )["Instances"][0]
    document = {
        "instanceId": instance["InstanceId"],
        "region": p.region,
        "availabilityZone": instance["Placement"]["AvailabilityZone"],
    }
    api.ecs.register_container_instance(
        cluster=p.cluster, instanceIdentityDocument=json.dumps(document)
    )
    definition = api.carts_definition()
    definition.update(networkMode="bridge", requiresCompatibilities=["EC2"])
    for container in definition["containerDefinitions"]:
        container["logConfiguration"]["options"].pop("awslogs-stream-prefix", None)
        for mapping in container.get("portMappings", []):
            mapping.pop("hostPort", None)  # bridge mode: a dynamic host port
    arn = api.ecs.register_task_definition(**definition)["taskDefinition"]["taskDefinitionArn"]
    api.ecs.delete_service(cluster=p.cluster, service=p.service, force=True)

    def inactive() -> bool:
        return bool(api.service()["status"] == "INACTIVE")

    api.until("the old service to drain", inactive)
    api.ecs.create_service(
        cluster=p.cluster,
        serviceName=p.service,
        taskDefinition=arn,
        desiredCount=1,
        launchType="EC2",
        schedulingStrategy="REPLICA",
    )
    api.until("two tasks on EC2 to fail", stopped_of(api, arn, 2))


def sidecar(api: Api) -> None:
    """A FireLens log router listed before the carts container (its own essential container
    with a health check, as AWS's FireLens examples define it): ``describe-tasks`` lists the
    containers in the definition's order, so the first one is not the app (ECS Developer Guide,
    firelens-using-fluentbit.html; bc:ecs ``Task.containers``)."""
    definition = api.carts_definition()
    router = {
        "name": LOG_ROUTER,
        "image": LOG_ROUTER_IMAGE,
        "essential": True,
        "memoryReservation": 50,
        "firelensConfiguration": {"type": "fluentbit"},
        "healthCheck": {
            "command": ["CMD-SHELL", "curl -f http://127.0.0.1:2020/api/v1/health || exit 1"],
            "interval": 10,
            "timeout": 5,
            "retries": 3,
            "startPeriod": 10,
        },
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                **definition["containerDefinitions"][0]["logConfiguration"]["options"],
                "awslogs-stream-prefix": "firelens",
            },
        },
    }
    definition["containerDefinitions"] = [router, *definition["containerDefinitions"]]
    arn = api.register_and_deploy(definition)
    api.until("two tasks with the sidecar to fail", stopped_of(api, arn, 2))


def step_done(api: Api) -> None:
    """The learner already did step 3.2: ``CartsDynamoPolicy``, as the workshop's heredoc
    writes it (``aws iam put-role-policy``), is on the task role, and carts runs HEALTHY under a
    COMPLETED deployment (WORKSHOP.md, step 3.2; bc:ecs ``Deployment.rolloutState``)."""
    from runbook_lib.policy import render_policy

    p = api.params
    policy = render_policy(p, p.lab_account_id)
    api.iam.put_role_policy(
        RoleName=p.task_role, PolicyName=policy.name, PolicyDocument=policy.text
    )

    def healthy_and_completed() -> bool:
        service = api.service()
        primary = service["deployments"][0]
        return bool(primary.get("rolloutState") == "COMPLETED" and service["runningCount"] >= 1)

    api.until("carts to run HEALTHY and its deployment to complete", healthy_and_completed)


def execution_role(api: Api) -> None:
    """The execution role lost ``AmazonECSTaskExecutionRolePolicy`` (detached): the awslogs
    driver may not create the task's log stream, so every task stops before carts runs with
    ``TaskFailedToStart`` and "ResourceInitializationError: failed to validate logger args"
    (ECS Developer Guide: task_execution_IAM_role.html, "the awslogs log driver requires
    logs:CreateLogStream and logs:PutLogEvents"; stopped-task-error-codes.html). No task-role
    policy helps."""
    from runbook_lib.partitions import partition_for_region

    p = api.params
    managed = (
        f"arn:{partition_for_region(p.region)}:iam::aws:policy/service-role/"
        "AmazonECSTaskExecutionRolePolicy"
    )
    api.iam.detach_role_policy(RoleName=p.execution_role, PolicyArn=managed)
    arn = api.service()["taskDefinition"]
    api.until("two tasks to fail to start", stopped_of(api, arn, 2))


# --- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One situation of a real account.

    ``account``: what the account holds, in one line; ``must``: what the runbook must do about
    it (issue "Real accounts", "The runbook handles each"); ``source``: the AWS document or
    model field the lab follows; ``setup``: the API calls that make it; ``faults``: knobs it
    turns on; ``region``: a region it needs (its partition matters, not the name).
    """

    name: str
    account: str
    must: str
    source: str
    setup: Callable[[Api], None] | None = None
    faults: Mapping[str, Any] = field(default_factory=dict)
    region: str | None = None


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            DEFAULT,
            "the workshop's broken account: the task role has no DynamoDB permission",
            "write CartsDynamoPolicy; carts RUNNING and HEALTHY",
            "WORKSHOP.md, step 3.2",
        ),
        Scenario(
            "no-health-check",
            "carts' task definition revision has no healthCheck; the service runs it",
            "write the policy; carts RUNNING with healthStatus UNKNOWN counts as settled",
            "bc:ecs Container.healthStatus; UpdateService (RUNNING is healthy without checks)",
            no_health_check,
        ),
        Scenario(
            "already-fixed",
            f"another inline policy ({OTHER_POLICY}) grants DynamoDB; carts HEALTHY, COMPLETED",
            "report the healthy service as such, with no wait for a task that will not come",
            "bc:ecs Deployment.rolloutState; ECS starts no task because IAM changed",
            already_fixed,
        ),
        Scenario(
            "step-done",
            "the learner already did step 3.2: CartsDynamoPolicy is on the task role; carts "
            "HEALTHY, COMPLETED",
            "find the policy it would write already there: write nothing, report carts running",
            "WORKSHOP.md, step 3.2; bc:ecs Deployment.rolloutState",
            step_done,
        ),
        Scenario(
            "execution-role",
            "the execution role lost AmazonECSTaskExecutionRolePolicy: tasks fail to start "
            "(ResourceInitializationError, the log stream denied)",
            "name the execution role as the cause and write nothing to the task role",
            "ECS Developer Guide: task_execution_IAM_role.html, stopped-task-error-codes.html",
            execution_role,
        ),
        Scenario(
            "permissions-boundary",
            f"a permissions boundary ({BOUNDARY_POLICY}) on the task role allows no DynamoDB",
            "stop before writing, naming the boundary and what would fix it",
            "IAM User Guide: access_policies_boundaries.html, troubleshoot_access-denied.html",
            permissions_boundary,
        ),
        Scenario(
            "circuit-breaker",
            "deployment circuit breaker on, rollback off; the deployment is FAILED",
            "write the policy, then the gated update-service --force-new-deployment",
            "bc:ecs DeploymentCircuitBreaker, Deployment.rolloutState, UpdateService",
            circuit_breaker,
        ),
        Scenario(
            "aws-cn",
            "the workshop in cn-north-1: every ARN in partition aws-cn",
            "every ARN built and written says arn:aws-cn:; carts RUNNING",
            "botocore partitions.json / endpoints.json (aws-cn)",
            region="cn-north-1",
        ),
        Scenario(
            "no-stream-prefix",
            "carts on EC2, awslogs without awslogs-stream-prefix: streams named by container id",
            "find the denial in the stream named after the container's runtime id",
            "bc:ecs LogConfiguration.options (awslogs-stream-prefix)",
            no_stream_prefix,
        ),
        Scenario(
            "log-pages",
            "CloudWatch Logs answers partial and empty pages before the end",
            "follow the tokens (GetLogEvents until the token repeats) and find the denial",
            "bc:logs GetLogEvents / FilterLogEvents (nextForwardToken, nextToken)",
            faults={"log_pages": True},
        ),
        Scenario(
            "stale-reads",
            "IAM reads answer the state before a write for 10 s after it",
            "retry reads for a bounded time before calling a mismatch; rollback verified",
            "IAM User Guide: troubleshoot_general.html#troubleshoot_general_eventual-consistency",
            faults={"stale_reads_s": 10.0},
        ),
        Scenario(
            "slow-propagation",
            "IAM changes reach the running carts app only 500 s after they are written",
            "write the policy, then wait for carts within timeout_s (or time out, saying why)",
            "IAM User Guide: troubleshoot_general.html#troubleshoot_general_eventual-consistency",
            faults={"propagation_delay_s": 500.0},
        ),
        Scenario(
            "sidecar",
            f"a FireLens log router ({LOG_ROUTER}) listed before the carts container",
            "read the essential container named in the task definition (application)",
            "ECS Developer Guide: firelens-using-fluentbit.html; bc:ecs Task.containers",
            sidecar,
        ),
    )
}


def scenario(name: str) -> Scenario:
    """The scenario called ``name``; a ``LabConfigError`` naming the choices otherwise."""
    from runbook_lib.lab.errors import LabConfigError

    found = SCENARIOS.get(name) if isinstance(name, str) else None
    if found is None:
        raise LabConfigError(f"scenario must be one of {', '.join(SCENARIOS)}; got {name!r}.")
    return found
