"""mlplat's account bootstrap: what every other stack needs before its first `pulumi up`.

- the S3 bucket for `pulumi login s3://...` (versioned, KMS-encrypted, public access blocked, TLS-only,
  protected), built from mlplat's own ArtifactStore;
- a KMS key for the `awskms://` secrets provider of the stacks;
- GitHub's OIDC provider, a deploy role that only the named protected deployment environments of this
  repository can assume (``deployEnvironments``; each must exist in GitHub with protection rules), a
  read-only preview role for its pull requests, and the ML pipeline's role (describe the clusters; its kubectl
  access is an EKS access entry the platform stack makes, ``MlPlatformArgs.pipeline_role_arn``). No long-lived
  keys.
"""

import pulumi
import pulumi_aws as aws

from mlplat.components.bootstrap import GitHubAccess, GitHubAccessArgs
from mlplat.components.iam import rotated_key
from mlplat.components.storage import ArtifactStore, ArtifactStoreArgs

config = pulumi.Config()
region = pulumi.Config("aws").require("region")
repository = config.require("githubRepository")
provider = aws.Provider(
    "aws",
    region=region,
    default_tags=aws.ProviderDefaultTagsArgs(
        tags={
            "project": "mlplat",
            "environment": "account",
            "owner": config.get("owner") or "ml-platform",
            "cost-center": config.get("costCenter") or "ml-platform",
            "managed-by": "pulumi",
        }
    ),
)
opts = pulumi.ResourceOptions(provider=provider)

state = ArtifactStore(
    "mlplat-state",
    ArtifactStoreArgs(protect=True, noncurrent_to_glacier_days=90, noncurrent_expire_days=400),
    opts=pulumi.ResourceOptions(providers=[provider]),
)
secrets_key = rotated_key(
    "mlplat-pulumi-secrets",
    "Encrypts Pulumi stack secrets (awskms:// provider)",
    pulumi.ResourceOptions(provider=provider, protect=True),
)
alias = aws.kms.Alias(
    "mlplat-pulumi-secrets", name="alias/mlplat-pulumi-secrets", target_key_id=secrets_key.key_id, opts=opts
)
access = GitHubAccess(
    "github",
    GitHubAccessArgs(
        repository=repository,
        deploy_branch=config.get("deployBranch") or "main",
        deploy_environments=tuple(config.get_object("deployEnvironments") or ("dev", "production")),
        pipeline_stacks=tuple(config.get_object("pipelineStacks") or ("dev", "production")),
        pipeline_push_repositories=tuple(config.get_object("pipelinePushRepositories") or ()),
        state_bucket_arn=state.bucket_arn,
        state_key_arn=state.kms_key_arn,
        secrets_key_arn=secrets_key.arn,
    ),
    opts=pulumi.ResourceOptions(providers=[provider]),
)

pulumi.export("stateBucket", state.bucket_name)
pulumi.export("pulumiLogin", pulumi.Output.concat("s3://", state.bucket_name))
pulumi.export("secretsProvider", pulumi.Output.concat("awskms://", alias.name, "?region=", region))
pulumi.export("deployRoleArn", access.deploy_role.arn)
pulumi.export("previewRoleArn", access.preview_role.arn)
pulumi.export("pipelineRoleArn", access.pipeline_role.arn)
