"""The workshop account as it stands when step 3.2 begins, written into moto's backends.

From WORKSHOP.md (names are the parameters): a VPC with two private subnets and a security
group; the learner's role (Workshop Studio's participant role); the ECS cluster; the task role (trusting ``ecs-tasks.amazonaws.com``) with its one inline
policy and nothing for DynamoDB; the execution role with AWS's managed execution policy; the
carts table with its customer index; the log group; the carts task definition and service.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from runbook_lib.lab.backends import Backends
from runbook_lib.lab.moto_patches import register_aws_managed_policy
from runbook_lib.params import Params
from runbook_lib.partitions import partition_for_region

IMAGE = "public.ecr.aws/aws-containers/retail-store-sample-cart:0.8.0"
FAMILY = "retail-store-ecs-carts"
LOG_GROUP = "retail-store-ecs-tasks"
STREAM_PREFIX = "carts-service"
CONTAINER = "application"
BASE_POLICY = "BasicRetailStoreEcsTaskRoleDefaultPolicy9759E157"
EXECUTION_POLICY = "AmazonECSTaskExecutionRolePolicy"
#: Who the learner is: Workshop Studio signs participants in through this role.
PARTICIPANT_ROLE = "WSParticipantRole"
PARTICIPANT_SESSION = "Participant"

ECS_TASKS_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ecs-tasks.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}

#: The task role's only policy before the fix: ECS Exec and EFS, nothing for DynamoDB.
BASE_POLICY_DOCUMENT = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Action": [
                "ssmmessages:CreateControlChannel",
                "ssmmessages:CreateDataChannel",
                "ssmmessages:OpenControlChannel",
                "ssmmessages:OpenDataChannel",
            ],
            "Resource": "*",
            "Effect": "Allow",
        },
        {
            "Action": [
                "elasticfilesystem:ClientMount",
                "elasticfilesystem:ClientWrite",
                "elasticfilesystem:ClientRootAccess",
            ],
            "Resource": "*",
            "Effect": "Allow",
        },
    ],
}


@dataclass(frozen=True)
class Seeded:
    """Ids and ARNs of what :func:`seed_workshop` made."""

    vpc_id: str
    subnet_ids: tuple[str, ...]
    security_group_id: str
    task_role_arn: str
    execution_role_arn: str
    task_definition_arn: str
    service_arn: str
    participant_arn: str  # the learner's assumed-role ARN
    participant_user_id: str


def seed_workshop(backends: Backends, params: Params) -> Seeded:
    """Write the broken workshop state into the (empty) backends; caller holds MOTO_LOCK."""
    region = params.region
    partition = partition_for_region(region)
    ec2 = backends.ec2
    vpc = ec2.create_vpc("10.0.0.0/16")
    # moto behaviour: run_task (awsvpc) reads the ENI's private DNS name, which moto only sets
    # when the VPC has DNS hostnames on. The workshop's VPC has them on anyway.
    vpc.enable_dns_hostnames = True
    vpc.enable_dns_support = True
    subnets = [
        ec2.create_subnet(vpc.id, cidr, availability_zone=f"{region}{zone}")
        for cidr, zone in (("10.0.128.0/18", "a"), ("10.0.192.0/18", "b"))
    ]
    group = ec2.create_security_group(
        "retail-store-ecs-carts", "Carts service tasks", vpc_id=vpc.id
    )
    ec2.create_tags([vpc.id], {"Name": "retail-store-ecs-vpc"})
    for i, subnet in enumerate(subnets, start=1):
        ec2.create_tags([subnet.id], {"Name": f"retail-store-ecs-vpc/PrivateSubnet{i}"})

    iam = backends.iam
    trust = json.dumps(ECS_TASKS_TRUST)
    task_role = iam.create_role(
        params.task_role, trust, "/", None, "Task role of the retail store's ECS services", [], None
    )
    iam.put_role_policy(params.task_role, BASE_POLICY, json.dumps(BASE_POLICY_DOCUMENT))
    exec_role = iam.create_role(
        params.execution_role,
        trust,
        "/",
        None,
        "Execution role of the retail store's tasks",
        [],
        None,
    )
    iam.attach_role_policy(
        register_aws_managed_policy(iam, EXECUTION_POLICY), params.execution_role
    )
    account_root = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:{partition}:iam::{params.lab_account_id}:root"},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
            }
        ],
    }
    participant = iam.create_role(
        PARTICIPANT_ROLE, json.dumps(account_root), "/", None, "Workshop participant", [], None
    )
    iam.attach_role_policy(
        register_aws_managed_policy(iam, "AdministratorAccess"), PARTICIPANT_ROLE
    )

    backends.dynamodb.create_table(
        params.table,
        [{"AttributeName": "id", "KeyType": "HASH"}],
        None,
        [
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "customerId", "AttributeType": "S"},
        ],
        [
            {
                "IndexName": params.index,
                "KeySchema": [{"AttributeName": "customerId", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        None,
        None,
        "PAY_PER_REQUEST",
        None,
        [],
        False,
        None,
    )
    backends.logs.create_log_group(LOG_GROUP, {})

    ecs = backends.ecs
    ecs.create_cluster(params.cluster)
    tdef = ecs.register_task_definition(
        FAMILY,
        [carts_container(params)],
        network_mode="awsvpc",
        requires_compatibilities=["FARGATE"],
        cpu="1024",
        memory="2048",
        task_role_arn=task_role.arn,
        execution_role_arn=exec_role.arn,
        runtime_platform={"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"},
    )
    service = ecs.create_service(
        params.cluster,
        params.service,
        1,
        tdef.arn,
        scheduling_strategy="REPLICA",
        launch_type="FARGATE",
        platform_version="LATEST",
        network_configuration={
            "awsvpcConfiguration": {
                "subnets": [s.id for s in subnets],
                "securityGroups": [group.id],
                "assignPublicIp": "DISABLED",
            }
        },
    )
    return Seeded(
        vpc_id=vpc.id,
        subnet_ids=tuple(s.id for s in subnets),
        security_group_id=group.id,
        task_role_arn=task_role.arn,
        execution_role_arn=exec_role.arn,
        task_definition_arn=tdef.arn,
        service_arn=service.arn,
        participant_arn=(
            f"arn:{partition}:sts::{params.lab_account_id}:assumed-role/{PARTICIPANT_ROLE}/"
            f"{PARTICIPANT_SESSION}"
        ),
        participant_user_id=f"{participant.id}:{PARTICIPANT_SESSION}",
    )


def carts_container(params: Params) -> dict[str, object]:
    """The carts container definition of WORKSHOP.md step 3.1."""
    return {
        "name": CONTAINER,
        "image": IMAGE,
        "essential": True,
        # moto behaviour: run_task answers HTTP 500 unless a container sets container-level
        # memory or memoryReservation (AWS needs neither on Fargate). A soft limit equal to the
        # task's memory changes nothing for the task.
        "memoryReservation": 2048,
        "portMappings": [
            {"name": CONTAINER, "containerPort": 8080, "hostPort": 8080, "protocol": "tcp"}
        ],
        "environment": [
            {"name": "CARTS_DYNAMODB_TABLENAME", "value": params.table},
            {"name": "SPRING_PROFILES_ACTIVE", "value": "dynamodb"},
        ],
        "healthCheck": {
            "command": ["CMD-SHELL", "curl -f http://localhost:8080/actuator/health || exit 1"],
            "interval": 10,
            "timeout": 5,
            "retries": 3,
            "startPeriod": 60,
        },
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": LOG_GROUP,
                "awslogs-region": params.region,
                "awslogs-stream-prefix": STREAM_PREFIX,
            },
        },
    }
