#!/usr/bin/env python3
"""Users and policies on the IAM-enforcing S3 server (scripts/moto_iam_server.py, started by
scripts/test.sh with INITIAL_NO_AUTH_ACTION_COUNT), for the integration test that runs lethe with
exactly the permissions `lethe policy` prints.

  s3_iam.py setup ENDPOINT BUCKET
      Creates BUCKET and an `admin` user allowed everything, then spends the server's remaining
      unauthenticated actions, so every later request is checked against IAM policies. Prints
      `NAME=value` lines for scripts/test.sh.
  s3_iam.py user ENDPOINT NAME POLICY_FILE
      With the admin's keys (LETHE_TEST_S3_IAM_ADMIN_KEY/_SECRET), creates user NAME whose only
      permissions are the IAM policy document in POLICY_FILE. Prints `KEY SECRET`.
"""

import json
import os
import sys

import boto3
import botocore.exceptions


def create_user(iam, name: str, policy: str) -> dict:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=policy)
    return iam.create_access_key(UserName=name)["AccessKey"]


def user(endpoint: str, name: str, policy_file: str) -> int:
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=os.environ["LETHE_TEST_S3_IAM_ADMIN_KEY"],
        aws_secret_access_key=os.environ["LETHE_TEST_S3_IAM_ADMIN_SECRET"],
    )
    with open(policy_file, encoding="utf-8") as f:
        key = create_user(iam, name, f.read())
    print(key["AccessKeyId"], key["SecretAccessKey"])
    return 0


def setup(endpoint: str, bucket: str) -> int:
    kw = dict(endpoint_url=endpoint, region_name="us-east-1")
    iam = boto3.client("iam", aws_access_key_id="setup", aws_secret_access_key="setup", **kw)
    everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    admin = create_user(iam, "admin", json.dumps(everything))
    s3 = boto3.client(
        "s3", aws_access_key_id=admin["AccessKeyId"], aws_secret_access_key=admin["SecretAccessKey"], **kw
    )
    s3.create_bucket(Bucket=bucket)
    # Spend what is left of the unauthenticated actions: a request with unknown keys is refused
    # once authentication is on.
    probe = boto3.client("iam", aws_access_key_id="nobody", aws_secret_access_key="nobody", **kw)
    for _ in range(1000):
        try:
            probe.list_users()
        except botocore.exceptions.ClientError:
            break
    else:
        print("s3_iam.py: the server never started checking credentials", file=sys.stderr)
        return 1
    print(f"LETHE_TEST_S3_IAM_ENDPOINT={endpoint}")
    print(f"LETHE_TEST_S3_IAM_BUCKET={bucket}")
    print(f"LETHE_TEST_S3_IAM_ADMIN_KEY={admin['AccessKeyId']}")
    print(f"LETHE_TEST_S3_IAM_ADMIN_SECRET={admin['SecretAccessKey']}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "setup":
        sys.exit(setup(sys.argv[2], sys.argv[3]))
    if len(sys.argv) == 5 and sys.argv[1] == "user":
        sys.exit(user(sys.argv[2], sys.argv[3], sys.argv[4]))
    print(__doc__, file=sys.stderr)
    sys.exit(64)
