//! The deployment artifacts in `deploy/` tell the truth about the code: the example
//! configuration loads, shows the built-in defaults and documents every key; the IAM policy
//! grants exactly the ElastiCache calls the bot makes, on scoped resources; the CloudFormation
//! template and the Kubernetes manifests wire the routes, the environment and the configuration
//! the bot actually reads.

use std::collections::{BTreeMap, BTreeSet};

use redis_autoscaler::config::{Config, Env, Policy, known_keys};
use redis_autoscaler::domain::{ReplicationGroupId, RunId, SnapshotName};
use serde_json::Value;

const EXAMPLE: &str = include_str!("../../deploy/config.example.toml");
const IAM_POLICY: &str = include_str!("../../deploy/iam-policy.json");
const CLOUDFORMATION: &str = include_str!("../../deploy/cloudformation.yaml");
const DOCKERFILE: &str = include_str!("../../deploy/Dockerfile");
const K8S_DEPLOYMENT: &str = include_str!("../../deploy/kubernetes/deployment.yaml");
const K8S_POSTGRES: &str = include_str!("../../deploy/kubernetes/deployment-postgres.yaml");
const K8S_SERVICE: &str = include_str!("../../deploy/kubernetes/service.yaml");
const K8S_PVC: &str = include_str!("../../deploy/kubernetes/pvc.yaml");
const K8S_CONFIGMAP: &str = include_str!("../../deploy/kubernetes/configmap.yaml");
const K8S_SECRET: &str = include_str!("../../deploy/kubernetes/secret.example.yaml");
const SDK: &str = include_str!("../../src/elasticache/sdk.rs");
const CLOUDWATCH_SDK: &str = include_str!("../../src/cloudwatch/sdk.rs");
const PRICING_SDK: &str = include_str!("../../src/pricing/sdk.rs");
const SQS_INTAKE: &str = include_str!("../../src/alarm/sqs.rs");

/// The environment variables `serve` refuses to start without.
const REQUIRED_ENV: [&str; 4] = [
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "PAGERDUTY_ROUTING_KEY",
    "ALARM_API_KEY",
];

/// Where the containers keep the store and find the configuration.
const STORE_DIR: &str = "/var/lib/redis-autoscaler";
const CONFIG_PATH: &str = "/etc/redis-autoscaler/config.toml";
/// The RDS CA bundle the image carries, for `[postgres] ca_file`.
const RDS_CA_BUNDLE: &str = "/usr/local/share/redis-autoscaler/rds-global-bundle.pem";
/// A URL of the shape the deploy artefacts give `DATABASE_URL`.
const DATABASE_URL: &str =
    "postgres://redis_autoscaler@db.example.internal:5432/redis_autoscaler?sslmode=require";

fn parse(text: &str) -> Config {
    Config::parse(text, &Env::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// What the parser gives for every key left out.
fn built_in() -> Config {
    parse("[slack]\nchannel = \"C0123ABCD\"\n")
}

// ------------------------------------------------------------------ config.example.toml

#[test]
fn the_example_config_loads_with_the_real_parser_and_warns_about_nothing() {
    let c = parse(EXAMPLE);
    assert_eq!(c.slack.channel.as_str(), "C0123ABCD");
    assert_eq!(c.slack.approvers.len(), 2);
    let names: Vec<&str> = c.groups.keys().map(|g| g.as_str()).collect();
    assert_eq!(names, ["prod-jobs", "prod-jobs-eu"]);
    let eu = &c.groups[&ReplicationGroupId::parse("prod-jobs-eu").unwrap()];
    assert_eq!(
        (
            eu.aws_id().as_str(),
            eu.account.as_deref(),
            eu.region.as_deref()
        ),
        ("prod-jobs", Some("payments"), Some("eu-west-1")),
        "the same id in another account and region, under its own name"
    );
    assert_eq!(c.accounts["payments"].account_id, "210987654321");
    assert_eq!(
        c.alarms
            .groups
            .values()
            .map(|g| g.as_str())
            .collect::<Vec<_>>(),
        ["prod-jobs"],
        "[alarms.groups] maps an alarm name to the example group"
    );
    assert!(
        c.warnings().is_empty(),
        "the example should not model a risky setting: {:?}",
        c.warnings()
    );
}

#[test]
fn the_example_shows_the_built_in_defaults() {
    let c = parse(EXAMPLE);
    let b = built_in();
    assert_eq!(
        c.defaults,
        Policy::default(),
        "[defaults] must be the built-in policy"
    );
    assert_eq!(b.defaults, Policy::default());
    assert_eq!(
        c.delivery, b.delivery,
        "[delivery] must be the built-in values"
    );
    assert_eq!(c.listen, b.listen);
    assert_eq!(c.database, b.database);
    assert_eq!(c.slack.command, b.slack.command);
    assert_eq!(c.alarms.description_prefix, b.alarms.description_prefix);
    assert_eq!(c.alarms.sns_topic_arns, b.alarms.sns_topic_arns);
    assert_eq!(
        (
            c.alarms.sqs_queue_url,
            c.alarms.sqs_wait,
            c.alarms.sqs_visibility
        ),
        (
            b.alarms.sqs_queue_url,
            b.alarms.sqs_wait,
            b.alarms.sqs_visibility
        )
    );
    assert_eq!(c.alarms.sqs_retry_interval, b.alarms.sqs_retry_interval);
}

#[test]
fn the_example_group_overrides_key_by_key() {
    let c = parse(EXAMPLE);
    let g = c
        .group(&ReplicationGroupId::parse("prod-jobs").unwrap())
        .expect("[groups.prod-jobs]");
    assert_eq!(g.channel.as_str(), "C0999WXYZ");
    assert_eq!(
        g.policy.max_node_type.as_ref().unwrap().to_string(),
        "cache.r6g.2xlarge"
    );
    assert_eq!(g.policy.min_approvals, 2);
    assert!(g.policy.pause_url.is_some() && g.policy.resume_url.is_some());
    // Everything else comes from [defaults].
    assert_eq!(g.policy.cooldown, c.defaults.cooldown);
    assert_eq!(g.policy.aws_retry, c.defaults.aws_retry);
    assert_eq!(g.policy.approval_timeout, c.defaults.approval_timeout);
}

/// Dotted keys of `table`, with the names an operator picks written as in [`known_keys`].
fn dotted_keys(prefix: &str, table: &toml::Table, out: &mut BTreeSet<String>) {
    for (key, value) in table {
        let path = match prefix {
            "" => key.clone(),
            "groups" => "groups.<id>".to_string(),
            "accounts" => "accounts.<name>".to_string(),
            "alarms.groups" => "alarms.groups.<alarm-name>".to_string(),
            p => format!("{p}.{key}"),
        };
        match value {
            toml::Value::Table(t) => dotted_keys(&path, t, out),
            _ => {
                out.insert(path);
            }
        }
    }
}

/// The example's commented-out `[postgres]` table (an error next to its SQLite `database`),
/// uncommented: the lines from `# [postgres]` to the next blank line, one `# ` removed.
fn example_postgres_table() -> String {
    let start = EXAMPLE
        .find("\n# [postgres]\n")
        .expect("config.example.toml shows [postgres], commented out");
    EXAMPLE[start + 1..]
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            l.strip_prefix("# ")
                .unwrap_or_else(|| panic!("`{l}` is not commented out"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_example_postgres_table_loads_with_a_postgres_database_and_shows_the_defaults() {
    let table = example_postgres_table();
    let with_url = Env::default().with("DATABASE_URL", DATABASE_URL);
    let c = Config::parse(&format!("{EXAMPLE}\n{table}\n"), &with_url)
        .unwrap_or_else(|e| panic!("{e}"));
    let p = c.postgres.expect("DATABASE_URL selects PostgreSQL");
    let b = Config::parse("[slack]\nchannel = \"C0123ABCD\"\n", &with_url)
        .unwrap()
        .postgres
        .unwrap();
    assert_eq!((p.lease, p.pool_size), (b.lease, b.pool_size));
    assert_eq!(
        p.ca_file.as_deref(),
        Some(std::path::Path::new(RDS_CA_BUNDLE))
    );
    // The commented `database` example is the URL form the bot accepts in the file.
    let url = EXAMPLE
        .lines()
        .find_map(|l| l.strip_prefix("#   database = "))
        .expect("a commented postgres:// database example");
    let c = parse(&format!(
        "database = {url}\n[slack]\nchannel = \"C0123ABCD\"\n"
    ));
    assert!(c.postgres.is_some(), "{url} selects PostgreSQL");
    for name in ["DATABASE_URL", "DATABASE_PASSWORD"] {
        assert!(
            EXAMPLE.contains(name),
            "config.example.toml does not mention {name}"
        );
    }
}

#[test]
fn the_example_sets_every_key_the_code_knows() {
    let table: toml::Table = EXAMPLE.parse().expect("valid TOML");
    let mut in_example = BTreeSet::new();
    dotted_keys("", &table, &mut in_example);
    let postgres: toml::Table = example_postgres_table().parse().expect("valid TOML");
    dotted_keys("", &postgres, &mut in_example);
    let known: BTreeSet<String> = known_keys().into_iter().collect();
    assert!(known.contains("listen") && known.contains("defaults.approval"));

    let missing: Vec<&String> = known.difference(&in_example).collect();
    assert!(
        missing.is_empty(),
        "deploy/config.example.toml does not show: {missing:?}"
    );
    // A group table may also set any policy key.
    let group_policy_keys: BTreeSet<String> = known
        .iter()
        .filter_map(|k| k.strip_prefix("defaults."))
        .map(|k| format!("groups.<id>.{k}"))
        .collect();
    let unknown: Vec<&String> = in_example
        .iter()
        .filter(|k| !known.contains(*k) && !group_policy_keys.contains(*k))
        .collect();
    assert!(
        unknown.is_empty(),
        "keys the code does not know: {unknown:?}"
    );
}

#[test]
fn every_key_in_the_example_has_a_comment() {
    let mut previous = "";
    for (n, line) in EXAMPLE.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let is_key = !t.starts_with('#') && !t.starts_with('[');
        if is_key {
            assert!(
                previous.starts_with('#') || t.contains(" # "),
                "deploy/config.example.toml line {}: `{t}` has no comment saying what it does",
                n + 1
            );
        }
        previous = t;
    }
}

// ------------------------------------------------------------------ IAM

/// The IAM actions the bot calls, the resource types each one needs here (as the bot calls it:
/// CreateSnapshot names the group, or one of its nodes by `CacheClusterId` for
/// `snapshot_source = "replica" | "primary"`, and AWS then authorises it against the cluster too)
/// and every type AWS authorises it against (the Service Authorization Reference). `"*"`: the
/// action has no resource-level permissions, so only `"Resource": "*"` grants it; each such one
/// is read-only.
const ACTIONS: [(&str, &[&str], &[&str]); 12] = [
    (
        "elasticache:DescribeReplicationGroups",
        &["replicationgroup"],
        &["replicationgroup"],
    ),
    (
        "elasticache:DescribeCacheClusters",
        &["cluster"],
        &["cluster"],
    ),
    (
        "elasticache:ListAllowedNodeTypeModifications",
        &["replicationgroup"],
        &["replicationgroup", "cluster"],
    ),
    (
        "elasticache:CreateSnapshot",
        &["snapshot", "replicationgroup", "cluster"],
        &["snapshot", "replicationgroup", "cluster"],
    ),
    (
        "elasticache:DescribeSnapshots",
        &["snapshot"],
        &["snapshot"],
    ),
    (
        "elasticache:ModifyReplicationGroup",
        &["replicationgroup"],
        &["replicationgroup"],
    ),
    (
        "elasticache:DescribeCacheParameters",
        &["parametergroup"],
        &["parametergroup"],
    ),
    ("elasticache:DescribeUpdateActions", &["*"], &[]),
    ("elasticache:DescribeEvents", &["*"], &[]),
    (
        "application-autoscaling:DescribeScalableTargets",
        &["*"],
        &[],
    ),
    ("cloudwatch:GetMetricData", &["*"], &[]),
    ("pricing:GetProducts", &["*"], &[]),
];

/// Calls made only with the bot's own credentials, never through an account's role: the Price
/// List is global (one endpoint lists every region's prices), so the cross-account role
/// doesn't grant them.
const HOME_ONLY: &[&str] = &["pricing:GetProducts"];

/// The only write the bot may make on snapshots is its own run's (named after the run).
const SNAPSHOT_WRITES: &[&str] = &["elasticache:CreateSnapshot"];

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().expect("a string").to_string())
            .collect(),
        other => panic!("expected a string or a list of strings, found {other}"),
    }
}

/// `arn:aws:elasticache:REGION:ACCOUNT:TYPE:NAME` → (TYPE, NAME).
fn elasticache_resource(arn: &str) -> (String, String) {
    let parts: Vec<&str> = arn.split(':').collect();
    assert!(
        parts.len() == 7 && parts[0] == "arn" && parts[2] == "elasticache",
        "`{arn}` is not an ElastiCache resource ARN"
    );
    (parts[5].to_string(), parts[6].to_string())
}

/// The operations `SdkElastiCache` sends (`self.client.<operation>()` for ElastiCache,
/// `self.autoscaling.<operation>()` for Application Auto Scaling) and `SdkCloudWatch` sends
/// (`.client.<operation>()`), as IAM action names.
fn operations_the_code_calls() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (source, field, prefix) in [
        (SDK, ".client", "elasticache"),
        (SDK, ".autoscaling", "application-autoscaling"),
        (CLOUDWATCH_SDK, ".client", "cloudwatch"),
        (PRICING_SDK, ".client", "pricing"),
    ] {
        operations_in(source, field, prefix, &mut out);
    }
    out
}

/// The operations `source` sends through `field` (`.client.<operation>()`), as IAM actions.
fn operations_in(source: &str, field: &str, prefix: &str, out: &mut BTreeSet<String>) {
    {
        for (at, _) in source.match_indices(field) {
            let rest = &source[at + field.len()..];
            // A lazily built client is reached through `.client()`.
            let rest = rest.strip_prefix("()").unwrap_or(rest);
            if rest.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let Some(call) = rest.trim_start().strip_prefix('.') else {
                continue;
            };
            let name: String = call
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let pascal: String = name
                .split('_')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect();
            out.insert(format!("{prefix}:{pascal}"));
        }
    }
}

#[test]
fn the_iam_policy_grants_exactly_the_calls_the_bot_makes_on_scoped_resources() {
    let policy: Value = serde_json::from_str(IAM_POLICY).expect("deploy/iam-policy.json is JSON");
    assert_eq!(policy["Version"], "2012-10-17");
    let wanted: BTreeMap<&str, (&[&str], &[&str])> = ACTIONS
        .iter()
        .map(|(action, needs, allowed)| (*action, (*needs, *allowed)))
        .collect();
    let mut granted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let snapshot_of_a_run = SnapshotName::for_run(&RunId::generate());

    for statement in policy["Statement"].as_array().expect("a Statement list") {
        assert_eq!(statement["Effect"], "Allow", "{statement}");
        let actions = strings(&statement["Action"]);
        // The SQS intake's, and the account roles' sts:AssumeRole, checked on their own.
        if actions
            .iter()
            .all(|a| a.starts_with("sqs:") || a == "sts:AssumeRole")
        {
            continue;
        }
        let resources = strings(&statement["Resource"]);
        for action in &actions {
            let (_, allowed) = wanted
                .get(action.as_str())
                .unwrap_or_else(|| panic!("`{action}` is not a call the bot makes"));
            if resources == ["*"] {
                // Only the read-only actions IAM can't scope to a resource.
                assert!(
                    allowed.is_empty(),
                    "{action} supports resource-level permissions: scope it ({statement})"
                );
                granted
                    .entry(action.clone())
                    .or_default()
                    .insert("*".into());
                continue;
            }
            assert!(
                !resources.iter().any(|r| r == "*"),
                "a scoped statement grants `*` too: {statement}"
            );
            for arn in &resources {
                let (kind, resource_name) = elasticache_resource(arn);
                assert!(
                    allowed.contains(&kind.as_str()),
                    "{action} is not authorised against `{kind}` resources ({arn})"
                );
                if kind == "snapshot" && SNAPSHOT_WRITES.contains(&action.as_str()) {
                    assert_eq!(resource_name, "redis-autoscaler-*", "{arn}");
                    let prefix = resource_name.trim_end_matches('*');
                    assert!(
                        snapshot_of_a_run.as_str().starts_with(prefix),
                        "{arn} does not cover the bot's snapshot names ({snapshot_of_a_run})"
                    );
                }
                granted
                    .entry(action.clone())
                    .or_default()
                    .insert(kind.clone());
            }
        }
    }

    let granted_actions: BTreeSet<&str> = granted.keys().map(String::as_str).collect();
    let wanted_actions: BTreeSet<&str> = wanted.keys().copied().collect();
    assert_eq!(granted_actions, wanted_actions);
    for (action, (needs, _)) in &wanted {
        for need in *needs {
            assert!(
                granted[*action].contains(*need),
                "{action} needs `{need}` resources"
            );
        }
    }
    let called = operations_the_code_calls();
    let listed: BTreeSet<String> = wanted_actions.iter().map(|a| a.to_string()).collect();
    assert_eq!(
        called, listed,
        "src/elasticache/sdk.rs, src/cloudwatch/sdk.rs and src/pricing/sdk.rs call exactly the operations the policy grants"
    );
}

/// IAM action names (`elasticache:Describe…`, `application-autoscaling:…`) in `text`, not ARNs
/// such as `elasticache:${AWS::Region}`.
fn actions_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in [
        "elasticache:",
        "application-autoscaling:",
        "cloudwatch:",
        "pricing:",
    ] {
        for (at, m) in text.match_indices(prefix) {
            let name: String = text[at + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                out.insert(format!("{prefix}{name}"));
            }
        }
    }
    out
}

/// What follows each `marker` (an ARN's prefix) in `text`, up to a quote or a space: the
/// resource types and names a policy grants (`snapshot:redis-autoscaler-*`, …).
fn resources_after(text: &str, marker: &str) -> BTreeSet<String> {
    text.match_indices(marker)
        .map(|(at, m)| {
            text[at + m.len()..]
                .split(|c: char| c.is_whitespace() || c == '"')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn the_cloudformation_task_role_is_the_same_policy() {
    let expected: BTreeSet<String> = ACTIONS.iter().map(|(a, _, _)| a.to_string()).collect();
    assert_eq!(actions_in(CLOUDFORMATION), expected);
    assert_eq!(actions_in(IAM_POLICY), expected);

    // The same resource types and names, with the stack's partition, region and account.
    let json_resources = resources_after(IAM_POLICY, "arn:aws:elasticache:*:*:");
    let marker = "arn:${AWS::Partition}:elasticache:${AWS::Region}:${AWS::AccountId}:";
    let cfn_resources = resources_after(CLOUDFORMATION, marker);
    assert_eq!(cfn_resources, json_resources);
    assert!(!json_resources.is_empty());
    // Unscoped grants are the same read-only ones in both.
    assert_eq!(
        IAM_POLICY.matches("\"Resource\": \"*\"").count(),
        CLOUDFORMATION.matches("Resource: \"*\"").count()
    );
}

/// What the SQS intake calls (`self.client.<operation>()` in src/alarm/sqs.rs), as IAM actions.
fn sqs_operations_the_code_calls() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    operations_in(SQS_INTAKE, ".client", "sqs", &mut out);
    out
}

/// The `sqs:` actions named in `text`.
fn sqs_actions_in(text: &str) -> BTreeSet<String> {
    text.match_indices("sqs:")
        .map(|(at, m)| {
            let name: String = text[at + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            format!("sqs:{name}")
        })
        .filter(|a| a.len() > 4 && a[4..].starts_with(|c: char| c.is_ascii_uppercase()))
        .collect()
}

#[test]
fn the_sqs_intake_is_granted_exactly_the_calls_it_makes_on_its_queue_only() {
    let called = sqs_operations_the_code_calls();
    let expected: BTreeSet<String> = ["sqs:DeleteMessage", "sqs:ReceiveMessage"]
        .map(String::from)
        .into();
    assert_eq!(called, expected, "src/alarm/sqs.rs calls");
    // deploy/iam-policy.json: one statement, those actions, one queue (no wildcard name).
    let policy: Value = serde_json::from_str(IAM_POLICY).unwrap();
    let sqs: Vec<&Value> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| strings(&s["Action"]).iter().any(|a| a.starts_with("sqs:")))
        .collect();
    assert_eq!(sqs.len(), 1, "{sqs:?}");
    let actions: BTreeSet<String> = strings(&sqs[0]["Action"]).into_iter().collect();
    assert_eq!(actions, expected);
    let resources = strings(&sqs[0]["Resource"]);
    assert_eq!(resources.len(), 1);
    let queue = resources[0].rsplit(':').next().unwrap();
    assert!(
        resources[0].starts_with("arn:aws:sqs:") && !queue.contains('*') && !queue.is_empty(),
        "{resources:?}"
    );
    // The task role: the same actions, on the stack's queue only, and only when it has one.
    let role = cfn_entry("Resources", "TaskRole");
    assert_eq!(sqs_actions_in(&role), expected);
    let grant = role
        .split("PolicyName: take-alarms-from-the-queue")
        .nth(1)
        .expect("the queue's policy");
    assert_eq!(value_of(grant, "Resource"), "!GetAtt AlarmQueue.Arn");
    assert!(role.contains(
        "- !If\n          - UseAlarmQueue\n          - PolicyName: take-alarms-from-the-queue"
    ));
    // No other grant in the template: the queue policy lets only EventBridge send.
    let everything_else: String = CLOUDFORMATION
        .replace(&role, "")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        sqs_actions_in(&everything_else),
        ["sqs:SendMessage".to_string()].into(),
    );
}

#[test]
fn the_cloudformation_alarm_queue_is_an_option_that_defaults_to_the_api_destination() {
    let p = cfn_entry("Parameters", "AlarmDelivery");
    assert_eq!(value_of(&p, "AllowedValues"), "[ApiDestination, SqsQueue]");
    assert_eq!(value_of(&p, "Default"), "ApiDestination");
    for (name, condition) in [
        ("AlarmQueue", "UseAlarmQueue"),
        ("AlarmQueuePolicy", "UseAlarmQueue"),
        ("AlarmApiConnection", "UseApiDestination"),
        ("AlarmApiDestination", "UseApiDestination"),
        ("AlarmRuleRole", "UseApiDestination"),
    ] {
        assert_eq!(
            value_of(&cfn_entry("Resources", name), "Condition"),
            condition,
            "{name}"
        );
    }
    assert!(CLOUDFORMATION.contains("  UseAlarmQueue: !Equals [!Ref AlarmDelivery, SqsQueue]\n"));
    assert!(CLOUDFORMATION.contains("  UseApiDestination: !Not [!Condition UseAlarmQueue]\n"));
    // Both rules (ALARM, and back to OK) go to the queue or to the API destination.
    for rule in ["AlarmRule", "AlarmClearedRule"] {
        let r = cfn_entry("Resources", rule);
        assert_eq!(
            value_of(&r, "Arn"),
            "!If [UseAlarmQueue, !GetAtt AlarmQueue.Arn, !GetAtt AlarmApiDestination.Arn]",
            "{rule}"
        );
        assert_eq!(
            value_of(&r, "RoleArn"),
            "!If [UseAlarmQueue, !Ref AWS::NoValue, !GetAtt AlarmRuleRole.Arn]"
        );
        assert!(
            r.contains("Arn: !GetAtt AlarmDeadLetterQueue.Arn"),
            "{rule}"
        );
    }
    // Encrypted, long-polled, and a redrive to the dead-letter queue the alarm watches.
    let q = cfn_entry("Resources", "AlarmQueue");
    assert_eq!(value_of(&q, "SqsManagedSseEnabled"), "true");
    assert_eq!(value_of(&q, "ReceiveMessageWaitTimeSeconds"), "20");
    assert_eq!(
        value_of(&q, "deadLetterTargetArn"),
        "!GetAtt AlarmDeadLetterQueue.Arn"
    );
    let receives: u32 = value_of(&q, "maxReceiveCount").parse().unwrap();
    let visibility: u32 = value_of(&q, "VisibilityTimeout").parse().unwrap();
    assert!(
        receives >= 5,
        "a failing alarm is tried more than a few times"
    );
    assert!(
        receives * visibility >= 3600,
        "as long as the API destination's hour of retries"
    );
    assert_eq!(value_of(&q, "QueueName"), "!Sub ${AWS::StackName}-alarms");
    let dlq = cfn_entry("Resources", "AlarmDeadLetterQueue");
    assert_eq!(value_of(&dlq, "SqsManagedSseEnabled"), "true");
    // Only the two rules may send, through EventBridge's service principal.
    let policy = cfn_entry("Resources", "AlarmQueuePolicy");
    assert_eq!(
        value_of(&policy, "Principal"),
        "{ Service: events.amazonaws.com }"
    );
    assert_eq!(value_of(&policy, "Action"), "sqs:SendMessage");
    assert_eq!(value_of(&policy, "Resource"), "!GetAtt AlarmQueue.Arn");
    assert_eq!(
        value_of(&policy, "\"aws:SourceArn\""),
        "[!GetAtt AlarmRule.Arn, !GetAtt AlarmClearedRule.Arn]"
    );
    let outputs = cfn_entry("Outputs", "AlarmQueueUrl");
    assert_eq!(value_of(&outputs, "Condition"), "UseAlarmQueue");
}

#[test]
fn the_cloudformation_config_with_the_queue_names_it_for_the_intake() {
    let toml = yaml_block(CLOUDFORMATION, "Name: REDIS_AUTOSCALER_CONFIG");
    let url = "https://sqs.us-east-1.amazonaws.com/123456789012/redis-autoscaler-alarms";
    let at = CLOUDFORMATION
        .find("AlarmQueueSettings: !If")
        .expect("the queue's settings");
    let lines: Vec<&str> = CLOUDFORMATION[at..]
        .lines()
        .take(4)
        .map(str::trim)
        .collect();
    assert_eq!(lines[1], "- UseAlarmQueue");
    assert_eq!(lines[3], "- \"\"", "nothing without the queue");
    let settings = lines[2].strip_prefix("- !Sub ").expect("a !Sub");
    assert_eq!(settings, "'sqs_queue_url = \"${AlarmQueue.QueueUrl}\"'");
    let line = settings
        .trim_matches('\'')
        .replace("${AlarmQueue.QueueUrl}", url);
    let toml = substitute(
        &toml,
        &[
            ("SlackChannelId", "C0123ABCD"),
            ("Approvers", r#"U0123ABCD", "S0456EFGH"#),
            ("MaxNodeType", "cache.r6g.4xlarge"),
            ("ReplicationGroupId", "prod-jobs"),
            ("AlarmQueueSettings", &line),
            ("PostgresSettings", ""),
            ("SlackModeSetting", ""),
        ],
    );
    let c = parse(&toml);
    let queue = c
        .alarms
        .sqs_queue_url
        .clone()
        .expect("the queue is configured");
    assert_eq!(
        (queue.region(), queue.name()),
        ("us-east-1", "redis-autoscaler-alarms")
    );
    assert_eq!(c.alarms.sqs_wait, std::time::Duration::from_secs(20));
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

// ------------------------------------------------------------------ CloudFormation

/// The text of the YAML block scalar (`key: |` or `- |`) that follows the first line containing
/// `after`, dedented.
fn yaml_block(text: &str, after: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains(after))
        .unwrap_or_else(|| panic!("no line with `{after}`"));
    let header = (start..lines.len())
        .find(|&i| lines[i].trim_end().ends_with('|'))
        .unwrap_or_else(|| panic!("no block scalar after `{after}`"));
    let indent = |l: &str| l.len() - l.trim_start().len();
    let outer = indent(lines[header]);
    let body: Vec<&str> = lines[header + 1..]
        .iter()
        .copied()
        .take_while(|l| l.trim().is_empty() || indent(l) > outer)
        .collect();
    let inner = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| indent(l))
        .min()
        .expect("a non-empty block");
    body.iter()
        .map(|l| l.get(inner..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Replace every `${Name}` in `text` from `values`; an unknown name fails the test.
fn substitute(text: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find('}').expect("a closing brace") + at;
        let name = &rest[at + 2..end];
        let value = values
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no test value for ${{{name}}}"))
            .1;
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn the_cloudformation_config_loads_and_keeps_the_store_on_efs() {
    let toml = yaml_block(CLOUDFORMATION, "Name: REDIS_AUTOSCALER_CONFIG");
    let toml = substitute(
        &toml,
        &[
            ("SlackChannelId", "C0123ABCD"),
            // `!Join ['", "', SlackApprovers]`
            ("Approvers", r#"U0123ABCD", "S0456EFGH"#),
            ("MaxNodeType", "cache.r6g.4xlarge"),
            ("ReplicationGroupId", "prod-jobs"),
            // `!If [UseAlarmQueue, …, ""]`: alarms through the API destination.
            ("AlarmQueueSettings", ""),
            // `!If [UsePostgres, …, ""]`: the SQLite path.
            ("PostgresSettings", ""),
            ("SlackModeSetting", ""),
        ],
    );
    let c = parse(&toml);
    assert!(c.postgres.is_none());
    assert_eq!(c.slack.approvers.len(), 2);
    assert!(
        c.group(&ReplicationGroupId::parse("prod-jobs").unwrap())
            .is_some()
    );
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    assert!(
        c.database.starts_with(STORE_DIR),
        "{}",
        c.database.display()
    );
    assert!(CLOUDFORMATION.contains(&format!("ContainerPath: {STORE_DIR}")));
    assert!(CLOUDFORMATION.contains(&format!("--config {STORE_DIR}/config.toml")));
}

#[test]
fn the_cloudformation_template_wires_routes_secrets_and_the_alarm_filter() {
    for route in [
        "/alarms/eventbridge",
        "/alarms/sns",
        "/slack/commands",
        "/slack/interactions",
        "/healthz",
        "/readyz",
    ] {
        assert!(CLOUDFORMATION.contains(route), "no {route}");
    }
    assert!(CLOUDFORMATION.contains("https://${PublicHostName}/alarms/eventbridge"));
    assert!(CLOUDFORMATION.contains("HealthCheckPath: /healthz"));
    assert!(CLOUDFORMATION.contains("ApiKeyName: X-Api-Key"));
    for name in REQUIRED_ENV {
        assert!(
            CLOUDFORMATION.contains(&format!("- Name: {name}\n")),
            "the task gets no {name}"
        );
    }
    // The rule, the alarm and the bot agree on the description prefix.
    let prefix = built_in().alarms.description_prefix;
    assert!(CLOUDFORMATION.contains(&format!("description: [{{ prefix: \"{prefix}\" }}]")));
    assert!(CLOUDFORMATION.contains(&format!("AlarmDescription: !Sub \"{prefix} ")));
    assert!(CLOUDFORMATION.contains("detail-type: [CloudWatch Alarm State Change]"));
    assert!(CLOUDFORMATION.contains("MetricName: DatabaseMemoryUsagePercentage"));
}

/// The lines of `name:` (two spaces in) in the template's top-level `section`, up to the next
/// entry of that section.
fn cfn_entry(section: &str, name: &str) -> String {
    let lines: Vec<&str> = CLOUDFORMATION.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let starts_entry = |l: &str, depth: usize| {
        !l.trim().is_empty() && indent(l) <= depth && !l.trim_start().starts_with('#')
    };
    let top = lines
        .iter()
        .position(|l| *l == format!("{section}:"))
        .unwrap_or_else(|| panic!("no {section}"));
    let end = (top + 1..lines.len())
        .find(|&i| starts_entry(lines[i], 0))
        .unwrap_or(lines.len());
    let at = (top + 1..end)
        .find(|&i| lines[i] == format!("  {name}:"))
        .unwrap_or_else(|| panic!("no {name} in {section}"));
    let until = (at + 1..end)
        .find(|&i| starts_entry(lines[i], 2))
        .unwrap_or(end);
    lines[at + 1..until].join("\n")
}

/// The value of `key:` on its own line in `block` (the first one).
fn value_of<'a>(block: &'a str, key: &str) -> &'a str {
    block
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no `{key}:` in\n{block}"))
}

#[test]
fn the_cloudformation_replica_count_allows_only_one_or_two_and_defaults_to_one() {
    let p = cfn_entry("Parameters", "ReplicaCount");
    assert_eq!(value_of(&p, "Type"), "Number");
    assert_eq!(value_of(&p, "AllowedValues"), "[1, 2]");
    assert_eq!(value_of(&p, "Default"), "1");
    let service = cfn_entry("Resources", "Service");
    assert_eq!(value_of(&service, "DesiredCount"), "!Ref ReplicaCount");
    // Two tasks are PostgreSQL, whatever else is set; an existing database's URL is used too.
    let condition = |name: &str| {
        let line = format!("  {name}: ");
        let at = CLOUDFORMATION
            .find(&line)
            .unwrap_or_else(|| panic!("no condition {name}"));
        CLOUDFORMATION[at + line.len()..].lines().next().unwrap()
    };
    assert_eq!(
        condition("UsePostgres"),
        "!Or [!Not [!Equals [!Ref ReplicaCount, \"1\"]], !Condition HasDatabaseSecret]"
    );
    assert_eq!(condition("UseEfs"), "!Not [!Condition UsePostgres]");
    assert_eq!(
        condition("CreateDatabase"),
        "!And [!Condition UsePostgres, !Not [!Condition HasDatabaseSecret]]"
    );
}

#[test]
fn the_cloudformation_sqlite_path_keeps_one_writer_and_postgres_starts_before_it_stops() {
    // ReplicaCount 1 without a database secret is UseEfs: DesiredCount 1, and the old task
    // stops before the new one starts; with PostgreSQL a new task is healthy first.
    let service = cfn_entry("Resources", "Service");
    assert_eq!(
        value_of(&service, "MinimumHealthyPercent"),
        "!If [UsePostgres, 100, 0]"
    );
    assert_eq!(
        value_of(&service, "MaximumPercent"),
        "!If [UsePostgres, 200, 100]"
    );
    // The EFS store, its policy and its mount exist on the SQLite path only.
    for name in [
        "StoreFileSystem",
        "StoreAccessPoint",
        "StoreMountTargetA",
        "StoreMountTargetB",
        "StoreSecurityGroup",
    ] {
        assert_eq!(
            value_of(&cfn_entry("Resources", name), "Condition"),
            "UseEfs",
            "{name}"
        );
    }
    let task = cfn_entry("Resources", "TaskDefinition");
    assert!(task.contains("        - !If\n          - UseEfs\n          - Name: store\n            EFSVolumeConfiguration:"));
    let role = cfn_entry("Resources", "TaskRole");
    assert!(
        role.contains("        - !If\n          - UseEfs\n          - PolicyName: mount-the-store")
    );
    // A DependsOn can't name a resource that may not exist.
    let depends: Vec<&str> = value_of(&service, "DependsOn")
        .trim_matches(['[', ']'])
        .split(", ")
        .collect();
    for name in depends {
        let entry = cfn_entry("Resources", name);
        assert!(
            !entry.lines().any(|l| l.starts_with("    Condition: ")),
            "Service depends on {name}, which has a condition"
        );
    }
}

#[test]
fn the_cloudformation_database_admits_postgresql_only_from_the_task() {
    let sg = cfn_entry("Resources", "DatabaseSecurityGroup");
    assert_eq!(value_of(&sg, "Condition"), "CreateDatabase");
    let ingress =
        &sg[sg.find("SecurityGroupIngress:").unwrap()..sg.find("SecurityGroupEgress:").unwrap()];
    assert_eq!(
        ingress.matches("IpProtocol:").count(),
        1,
        "one rule:\n{ingress}"
    );
    assert_eq!(value_of(ingress, "IpProtocol"), "tcp");
    assert_eq!(value_of(ingress, "FromPort"), "5432");
    assert_eq!(value_of(ingress, "ToPort"), "5432");
    assert_eq!(
        value_of(ingress, "SourceSecurityGroupId"),
        "!Ref TaskSecurityGroup"
    );
    assert!(!ingress.contains("Cidr"), "{ingress}");

    let db = cfn_entry("Resources", "Database");
    assert_eq!(value_of(&db, "Condition"), "CreateDatabase");
    assert_eq!(value_of(&db, "Engine"), "postgres");
    assert_eq!(
        value_of(&db, "VPCSecurityGroups"),
        "[!Ref DatabaseSecurityGroup]"
    );
    assert_eq!(value_of(&db, "StorageEncrypted"), "true");
    assert_eq!(value_of(&db, "PubliclyAccessible"), "false");
    assert_eq!(value_of(&db, "ManageMasterUserPassword"), "true");
    assert_eq!(value_of(&db, "Port"), "\"5432\"");
    assert!(
        !db.lines()
            .any(|l| l.trim().starts_with("MasterUserPassword:")),
        "RDS keeps the password"
    );
    let subnets = cfn_entry("Resources", "DatabaseSubnetGroup");
    assert_eq!(value_of(&subnets, "SubnetIds"), "!Ref ServiceSubnetIds");

    // The task reaches it with the user and database RDS created, TLS on, and no password in
    // the plain environment.
    let task = cfn_entry("Resources", "TaskDefinition");
    let url = task
        .lines()
        .find_map(|l| l.trim().strip_prefix("Value: !Sub \"postgres://"))
        .expect("DATABASE_URL for the created database");
    let expected = format!(
        "{user}@${{Database.Endpoint.Address}}:5432/{name}?sslmode=require\"",
        user = value_of(&db, "MasterUsername"),
        name = value_of(&db, "DBName"),
    );
    assert_eq!(url, expected);
    assert!(task.contains(
        "            - !If\n              - CreateDatabase\n              - Name: DATABASE_URL\n                Value: !Sub \"postgres://"
    ));
}

/// `!Ref X` → `X`; `!GetAtt X.Y` → `X.Y`; `!Sub "${X.Y}:password::"` → `X.Y` (the JSON key
/// of the secret is not part of its ARN).
fn secret_named(value: &str) -> String {
    let value = value.trim();
    if let Some(r) = value.strip_prefix("!Ref ") {
        return r.to_string();
    }
    if let Some(a) = value.strip_prefix("!GetAtt ") {
        return a.to_string();
    }
    let sub = value
        .strip_prefix("!Sub \"${")
        .and_then(|v| v.strip_suffix("}:password::\""))
        .unwrap_or_else(|| panic!("`{value}` is not a secret reference this test knows"));
    sub.to_string()
}

/// `(condition, secret)` pairs: `!If [C, A, B]` → (C, A) and (!C, B), `AWS::NoValue` left out.
fn conditional_secrets(value: &str, condition: &str, out: &mut BTreeSet<(String, String)>) {
    let value = value.trim();
    let Some(inner) = value
        .strip_prefix("!If [")
        .and_then(|v| v.strip_suffix(']'))
    else {
        out.insert((condition.to_string(), secret_named(value)));
        return;
    };
    let parts: Vec<&str> = inner.split(", ").collect();
    assert_eq!(parts.len(), 3, "{value}");
    for (c, v) in [
        (parts[0].to_string(), parts[1]),
        (format!("!{}", parts[0]), parts[2]),
    ] {
        if v != "!Ref AWS::NoValue" {
            out.insert((c, secret_named(v)));
        }
    }
}

#[test]
fn the_cloudformation_execution_role_reads_exactly_the_secrets_the_task_injects() {
    let role = cfn_entry("Resources", "TaskExecutionRole");
    assert_eq!(role.matches("secretsmanager:").count(), 1, "{role}");
    let resources = &role[role.find("Action: secretsmanager:GetSecretValue").unwrap()..];
    let mut readable = BTreeSet::new();
    for line in resources.lines().skip(2) {
        let Some(item) = line.trim().strip_prefix("- ") else {
            break;
        };
        conditional_secrets(item, "", &mut readable);
    }

    // The container's Secrets: one-line values, or a `- !If` / `- Condition` / `- Name:` /
    // `ValueFrom:` block for the ones only some stacks have.
    let task = cfn_entry("Resources", "TaskDefinition");
    let lines: Vec<&str> = task.lines().collect();
    let secrets = lines.iter().position(|l| l.trim() == "Secrets:").unwrap();
    let mut injected = BTreeSet::new();
    let mut names = BTreeSet::new();
    for i in secrets + 1..lines.len() {
        let l = lines[i].trim();
        if let Some(name) = l.strip_prefix("- Name: ") {
            names.insert(name.to_string());
        }
        let Some(value) = l.strip_prefix("ValueFrom: ") else {
            if !l.starts_with('-') && !l.starts_with('#') && !l.starts_with("ValueFrom") {
                break;
            }
            continue;
        };
        let condition = if lines[i - 3].trim() == "- !If" {
            lines[i - 2].trim().trim_start_matches("- ").to_string()
        } else {
            String::new()
        };
        conditional_secrets(value, &condition, &mut injected);
    }
    assert_eq!(readable, injected);
    for name in REQUIRED_ENV
        .iter()
        .chain(&["DATABASE_URL", "DATABASE_PASSWORD"])
    {
        assert!(names.contains(*name), "the task gets no {name} secret");
    }
    assert!(injected.contains(&("HasDatabaseSecret".into(), "DatabaseSecretArn".into())));
    assert!(injected.contains(&(
        "CreateDatabase".into(),
        "Database.MasterUserSecret.SecretArn".into()
    )));
}

#[test]
fn the_cloudformation_postgres_config_trusts_the_rds_ca_bundle_the_image_carries() {
    let settings = yaml_block(CLOUDFORMATION, "PostgresSettings: !If");
    let toml = yaml_block(CLOUDFORMATION, "Name: REDIS_AUTOSCALER_CONFIG");
    let toml = substitute(
        &toml,
        &[
            ("SlackChannelId", "C0123ABCD"),
            ("Approvers", r#"U0123ABCD", "S0456EFGH"#),
            ("MaxNodeType", "cache.r6g.4xlarge"),
            ("ReplicationGroupId", "prod-jobs"),
            ("AlarmQueueSettings", ""),
            ("PostgresSettings", &settings),
            ("SlackModeSetting", ""),
        ],
    );
    // The task has DATABASE_URL (plain, or from the database secret) whenever UsePostgres.
    let env = Env::default()
        .with("DATABASE_URL", DATABASE_URL)
        .with("DATABASE_PASSWORD", "from-the-managed-secret");
    let c = Config::parse(&toml, &env).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    let p = c.postgres.expect("PostgreSQL");
    assert_eq!(
        p.ca_file.as_deref(),
        Some(std::path::Path::new(RDS_CA_BUNDLE))
    );
    assert!(p.password.is_some());
    assert!(
        DOCKERFILE.contains(&format!("-o {RDS_CA_BUNDLE}")),
        "deploy/Dockerfile does not put the RDS bundle at {RDS_CA_BUNDLE}"
    );
    assert!(DOCKERFILE.contains(&format!("chmod 0644 {RDS_CA_BUNDLE}")));
    assert!(K8S_CONFIGMAP.contains(&format!("# ca_file = \"{RDS_CA_BUNDLE}\"")));
}

// ------------------------------------------------------------------ Kubernetes

#[test]
fn the_kubernetes_manifests_wire_routes_secrets_and_probes() {
    let all = [
        K8S_DEPLOYMENT,
        K8S_SERVICE,
        K8S_PVC,
        K8S_CONFIGMAP,
        K8S_SECRET,
    ]
    .concat();
    for route in [
        "/alarms/eventbridge",
        "/alarms/sns",
        "/slack/commands",
        "/slack/interactions",
    ] {
        assert!(all.contains(route), "no {route}");
    }
    assert!(K8S_DEPLOYMENT.contains("httpGet: { path: /healthz, port: http }"));
    assert!(K8S_DEPLOYMENT.contains("httpGet: { path: /readyz, port: http }"));
    for name in REQUIRED_ENV {
        assert!(
            K8S_DEPLOYMENT.contains(&format!("- name: {name}\n")),
            "the pod gets no {name}"
        );
        assert!(
            K8S_SECRET.contains(&format!("  {name}: ")),
            "secret.example.yaml has no {name}"
        );
    }
    assert!(K8S_DEPLOYMENT.contains("replicas: 1"));
    assert!(K8S_DEPLOYMENT.contains("type: Recreate"));
    assert!(K8S_DEPLOYMENT.contains("readOnlyRootFilesystem: true"));
    assert!(K8S_DEPLOYMENT.contains(&format!("mountPath: {STORE_DIR}\n")));
    assert!(K8S_DEPLOYMENT.contains(&format!("\"--config\", \"{CONFIG_PATH}\"")));
}

#[test]
fn the_kubernetes_config_loads_and_keeps_the_store_on_the_volume() {
    let c = parse(&yaml_block(K8S_CONFIGMAP, "config.toml: |"));
    assert!(
        c.database.starts_with(STORE_DIR),
        "{}",
        c.database.display()
    );
    assert!(!c.groups.is_empty());
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

/// The one object of `kind` in a multi-document manifest.
fn k8s_object<'a>(text: &'a str, kind: &str) -> &'a str {
    let found: Vec<&str> = text
        .split("\n---\n")
        .filter(|doc| doc.contains(&format!("\nkind: {kind}\n")))
        .collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

/// The container's environment variable names (`- name: UPPER_CASE`).
fn env_names(deployment: &str) -> BTreeSet<String> {
    deployment
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- name: "))
        .filter(|n| n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(String::from)
        .collect()
}

#[test]
fn the_kubernetes_postgres_option_runs_two_replicas_on_the_database_without_a_volume_claim() {
    let d = k8s_object(K8S_POSTGRES, "Deployment");
    assert!(d.contains("\n  replicas: 2\n"));
    assert!(d.contains(
        "    type: RollingUpdate\n    rollingUpdate:\n      maxUnavailable: 0\n      maxSurge: 1\n"
    ));
    assert!(!d.contains("persistentVolumeClaim") && !d.contains("claimName"));
    assert!(!d.contains(&format!("mountPath: {STORE_DIR}")));
    assert!(d.contains(
        "- name: DATABASE_URL\n              valueFrom:\n                secretKeyRef: { name: redis-autoscaler-secrets, key: DATABASE_URL }\n"
    ), "DATABASE_URL from the Secret, required");
    assert!(d.contains(
        "- name: DATABASE_PASSWORD\n              valueFrom:\n                secretKeyRef: { name: redis-autoscaler-secrets, key: DATABASE_PASSWORD, optional: true }\n"
    ));
    for line in [
        "httpGet: { path: /healthz, port: http }",
        "httpGet: { path: /readyz, port: http }",
        "readOnlyRootFilesystem: true",
        "topologyKey: kubernetes.io/hostname\n          whenUnsatisfiable: DoNotSchedule",
    ] {
        assert!(d.contains(line), "no `{line}`");
    }
    assert!(d.contains(&format!("\"--config\", \"{CONFIG_PATH}\"")));
    // The same object as the default (the Service selects either; applying one replaces the
    // other), with the same environment besides the database.
    let default = k8s_object(K8S_DEPLOYMENT, "Deployment");
    for d in [d, default] {
        assert!(d.contains("metadata:\n  name: redis-autoscaler\n"));
        assert!(d.contains("      app.kubernetes.io/name: redis-autoscaler\n"));
    }
    let mut expected = env_names(default);
    expected.extend(["DATABASE_URL".to_string(), "DATABASE_PASSWORD".to_string()]);
    assert_eq!(env_names(d), expected);
    for name in ["DATABASE_URL", "DATABASE_PASSWORD"] {
        assert!(
            K8S_SECRET.contains(&format!("  # {name}: ")),
            "secret.example.yaml shows no {name}"
        );
    }
}

#[test]
fn the_kubernetes_postgres_option_keeps_a_pod_through_a_drain() {
    let pdb = k8s_object(K8S_POSTGRES, "PodDisruptionBudget");
    assert!(pdb.contains("apiVersion: policy/v1\n"));
    assert!(pdb.contains("  minAvailable: 1\n"));
    assert!(pdb.contains("    matchLabels:\n      app.kubernetes.io/name: redis-autoscaler\n"));
    // Not with the single SQLite replica, whose drain must be allowed to stop it.
    assert!(!K8S_DEPLOYMENT.contains("PodDisruptionBudget"));
}

// ------------------------------------------------------------------ Dockerfile

#[test]
fn the_dockerfile_copies_only_the_sources_and_runs_the_bot_as_documented() {
    for line in DOCKERFILE.lines().filter(|l| l.starts_with("COPY ")) {
        if line.contains("--from=") {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        for source in &words[1..words.len() - 1] {
            assert!(
                ["Cargo.toml", "Cargo.lock", "src", "deploy/link-order.txt"].contains(source),
                "`{line}` copies more than Cargo.toml, Cargo.lock, src/ and the link order (there is no .dockerignore)"
            );
        }
    }
    // The binary is linked in the order tests/load/link-order.sh wrote (x86_64: lld), and the
    // list is there and names functions as the linker knows them.
    assert!(DOCKERFILE.contains("--symbol-ordering-file=deploy/link-order.txt"));
    assert!(
        DOCKERFILE.contains("cargo rustc --profile production --locked --bin redis-autoscaler")
    );
    let order = include_str!("../../deploy/link-order.txt");
    assert!(
        order.lines().count() > 1000,
        "the link order is nearly empty"
    );
    assert!(
        order
            .lines()
            .all(|l| !l.is_empty() && !l.contains(char::is_whitespace)),
        "one symbol name per line"
    );
    assert!(
        order.lines().any(|l| l.contains("SlackVerified")),
        "the signed-command path is in the link order"
    );
    let port = built_in().listen.port();
    assert!(DOCKERFILE.contains(&format!("EXPOSE {port}\n")));
    assert!(DOCKERFILE.contains(&format!("http://127.0.0.1:{port}/healthz")));
    assert!(DOCKERFILE.contains(&format!("VOLUME [\"{STORE_DIR}\"]")));
    assert!(DOCKERFILE.contains("USER 10001:10001"));
    assert!(DOCKERFILE.contains("ENTRYPOINT [\"redis-autoscaler\"]"));
    assert!(DOCKERFILE.contains(&format!("CMD [\"serve\", \"--config\", \"{CONFIG_PATH}\"]")));
}

const CROSS_ACCOUNT_ROLE: &str = include_str!("../../deploy/cross-account-role.yaml");

#[test]
fn the_cross_account_role_trusts_only_the_bot_and_grants_the_same_calls_in_its_account() {
    let expected: BTreeSet<String> = ACTIONS
        .iter()
        .map(|(a, _, _)| a.to_string())
        .filter(|a| !HOME_ONLY.contains(&a.as_str()))
        .collect();
    assert_eq!(actions_in(CROSS_ACCOUNT_ROLE), expected);
    // The same resource types and names, in the account it is deployed to, any region.
    let marker = "arn:${AWS::Partition}:elasticache:*:${AWS::AccountId}:";
    let resources = resources_after(CROSS_ACCOUNT_ROLE, marker);
    let json_resources = resources_after(IAM_POLICY, "arn:aws:elasticache:*:*:");
    assert_eq!(resources, json_resources);
    // Trusted: the bot's role only, with the ExternalId when one is given; usable as a StackSet
    // (no account or region named in it).
    let trust = CROSS_ACCOUNT_ROLE
        .split("AssumeRolePolicyDocument:")
        .nth(1)
        .and_then(|rest| rest.split("Policies:").next())
        .expect("a trust policy");
    assert!(
        trust.contains("Principal: { AWS: !Ref BotRoleArn }"),
        "{trust}"
    );
    assert!(
        trust.contains("\"sts:ExternalId\": !Ref ExternalId"),
        "{trust}"
    );
    assert_eq!(trust.matches("Principal").count(), 1, "{trust}");
    assert!(
        !CROSS_ACCOUNT_ROLE
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.chars().filter(char::is_ascii_digit).count() >= 12),
        "no account id written into the template"
    );
}

#[test]
fn the_bot_may_assume_only_the_account_roles_it_is_given() {
    let policy: Value = serde_json::from_str(IAM_POLICY).unwrap();
    let assume: Vec<&Value> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| strings(&s["Action"]).iter().any(|a| a.starts_with("sts:")))
        .collect();
    assert_eq!(assume.len(), 1, "{assume:?}");
    assert_eq!(strings(&assume[0]["Action"]), ["sts:AssumeRole"]);
    assert_eq!(
        strings(&assume[0]["Resource"]),
        ["arn:aws:iam::*:role/redis-autoscaler"],
        "the role deploy/cross-account-role.yaml names, in any account; never *"
    );
    let role = cfn_entry("Resources", "TaskRole");
    assert_eq!(role.matches("sts:AssumeRole").count(), 2, "{role}");
    let granted = role
        .split("assume-the-account-roles")
        .nth(1)
        .expect("a policy for the account roles");
    assert!(
        granted.contains("Resource: !Ref AssumeRoleArns"),
        "{granted}"
    );
    assert!(
        role.contains("- AssumesRoles\n          - PolicyName: assume-the-account-roles"),
        "only when roles are listed: {role}"
    );
    let param = cfn_entry("Parameters", "AssumeRoleArns");
    assert!(param.contains("Type: CommaDelimitedList") && param.contains("Default: \"\""));
}

#[test]
fn the_cloudformation_socket_mode_option_injects_the_app_token_and_sets_the_mode() {
    let param = cfn_entry("Parameters", "SlackMode");
    assert!(param.contains("AllowedValues: [Http, Socket]") && param.contains("Default: Http"));
    // The mode line the config gets, and only in Socket Mode.
    let setting = CLOUDFORMATION
        .lines()
        .find(|l| l.trim_start().starts_with("SlackModeSetting:"))
        .expect("the mode's setting")
        .trim();
    assert_eq!(
        setting,
        r#"SlackModeSetting: !If [UseSocketMode, 'mode = "socket"', ""]"#
    );
    let toml = substitute(
        &yaml_block(CLOUDFORMATION, "Name: REDIS_AUTOSCALER_CONFIG"),
        &[
            ("SlackChannelId", "C0123ABCD"),
            ("Approvers", r#"U0123ABCD", "S0456EFGH"#),
            ("MaxNodeType", "cache.r6g.4xlarge"),
            ("ReplicationGroupId", "prod-jobs"),
            ("AlarmQueueSettings", ""),
            ("PostgresSettings", ""),
            ("SlackModeSetting", r#"mode = "socket""#),
        ],
    );
    let env = Env::default()
        .with("SLACK_BOT_TOKEN", "xoxb-1")
        .with("SLACK_APP_TOKEN", "xapp-1-A1-2-abc")
        .with("PAGERDUTY_ROUTING_KEY", "k")
        .with("ALARM_API_KEY", "a");
    let c = Config::parse(&toml, &env).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.missing_secrets().is_empty(), "{:?}", c.missing_secrets());
    // The token is injected in Socket Mode only (that the execution role reads exactly what is
    // injected: the_cloudformation_execution_role_reads_exactly_the_secrets_the_task_injects).
    let task = cfn_entry("Resources", "TaskDefinition");
    for condition in ["UseSlackAppTokenSecretArn", "CreateSlackAppTokenSecret"] {
        let injected = task
            .split(&format!("- {condition}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("SLACK_APP_TOKEN under {condition}"));
        assert!(
            injected.trim_start().starts_with("- Name: SLACK_APP_TOKEN"),
            "{injected}"
        );
    }
    assert!(CLOUDFORMATION.contains(
        "UseSlackAppTokenSecretArn: !And [!Condition UseSocketMode, !Condition HasSlackAppTokenSecretArn]"
    ));
    assert!(CLOUDFORMATION.contains(
        "CreateSlackAppTokenSecret: !And [!Condition UseSocketMode, !Not [!Condition HasSlackAppTokenSecretArn]]"
    ));
}

#[test]
fn the_cloudformation_stack_opens_no_port_with_socket_mode_and_the_alarm_queue() {
    let condition = |name: &str| {
        let line = format!("  {name}: ");
        let at = CLOUDFORMATION
            .find(&line)
            .unwrap_or_else(|| panic!("no condition {name}"));
        CLOUDFORMATION[at + line.len()..].lines().next().unwrap()
    };
    assert_eq!(
        condition("NoInbound"),
        "!And [!Condition UseSocketMode, !Condition UseAlarmQueue]"
    );
    assert_eq!(condition("UseLoadBalancer"), "!Not [!Condition NoInbound]");
    // Everything that listens on the internet exists only with the load balancer.
    for name in [
        "LoadBalancerSecurityGroup",
        "LoadBalancer",
        "TargetGroup",
        "HttpsListener",
        "PublicRoutesRule",
    ] {
        let r = cfn_entry("Resources", name);
        assert_eq!(value_of(&r, "Condition"), "UseLoadBalancer", "{name}");
    }
    assert_eq!(
        value_of(&cfn_entry("Resources", "DnsRecord"), "Condition"),
        "CreateDnsRecord"
    );
    // Without it the task admits nothing, and the service names no target group.
    let task_sg = cfn_entry("Resources", "TaskSecurityGroup");
    assert!(
        task_sg.contains("SecurityGroupIngress: !If\n        - UseLoadBalancer"),
        "{task_sg}"
    );
    assert!(task_sg.contains("- !Ref AWS::NoValue"), "{task_sg}");
    let service = cfn_entry("Resources", "Service");
    assert!(
        service.contains("LoadBalancers: !If\n        - UseLoadBalancer"),
        "{service}"
    );
    assert_eq!(
        value_of(&service, "HealthCheckGracePeriodSeconds"),
        "!If [UseLoadBalancer, 60, !Ref AWS::NoValue]"
    );
    // A DependsOn can't be conditional: the service waits on a handle that refers to the rule.
    assert_eq!(value_of(&service, "DependsOn"), "[RoutesReady, StoreReady]");
    assert!(!service.contains("PublicRoutesRule"), "{service}");
    // The certificate and the name are needed exactly when something listens.
    let rules = cfn_entry("Rules", "InboundNeedsCertificateAndName");
    assert!(
        rules.contains(
            "!Not [!And [!Equals [!Ref SlackMode, Socket], !Equals [!Ref AlarmDelivery, SqsQueue]]]"
        ),
        "{rules}"
    );
    for p in ["CertificateArn", "PublicHostName"] {
        assert!(
            rules.contains(&format!("!Not [!Equals [!Ref {p}, \"\"]]")),
            "{rules}"
        );
        assert_eq!(
            value_of(&cfn_entry("Parameters", p), "Default"),
            "\"\"",
            "{p}"
        );
    }
    // Outputs that name the public endpoint are there only when it is.
    for (output, cond) in [
        ("LoadBalancerDnsName", "UseLoadBalancer"),
        ("SlackCommandsUrl", "UseSlackHttp"),
        ("AlarmEndpoint", "UseApiDestination"),
    ] {
        assert_eq!(value_of(&cfn_entry("Outputs", output), "Condition"), cond);
    }
}
