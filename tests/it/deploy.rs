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
const K8S_SERVICE: &str = include_str!("../../deploy/kubernetes/service.yaml");
const K8S_PVC: &str = include_str!("../../deploy/kubernetes/pvc.yaml");
const K8S_CONFIGMAP: &str = include_str!("../../deploy/kubernetes/configmap.yaml");
const K8S_SECRET: &str = include_str!("../../deploy/kubernetes/secret.example.yaml");
const SDK: &str = include_str!("../../src/elasticache/sdk.rs");
const CLOUDWATCH_SDK: &str = include_str!("../../src/cloudwatch/sdk.rs");

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
    assert_eq!(c.groups.len(), 1);
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

#[test]
fn the_example_sets_every_key_the_code_knows() {
    let table: toml::Table = EXAMPLE.parse().expect("valid TOML");
    let mut in_example = BTreeSet::new();
    dotted_keys("", &table, &mut in_example);
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
const ACTIONS: [(&str, &[&str], &[&str]); 11] = [
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
];

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
    ] {
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
    out
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
        "src/elasticache/sdk.rs and src/cloudwatch/sdk.rs call exactly the operations the policy grants"
    );
}

/// IAM action names (`elasticache:Describe…`, `application-autoscaling:…`) in `text`, not ARNs
/// such as `elasticache:${AWS::Region}`.
fn actions_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in ["elasticache:", "application-autoscaling:", "cloudwatch:"] {
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

#[test]
fn the_cloudformation_task_role_is_the_same_policy() {
    let expected: BTreeSet<String> = ACTIONS.iter().map(|(a, _, _)| a.to_string()).collect();
    assert_eq!(actions_in(CLOUDFORMATION), expected);
    assert_eq!(actions_in(IAM_POLICY), expected);

    // The same resource types and names, with the stack's partition, region and account.
    let json_resources: BTreeSet<String> = IAM_POLICY
        .match_indices("arn:aws:elasticache:*:*:")
        .map(|(at, m)| {
            IAM_POLICY[at + m.len()..]
                .split('"')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    let marker = "arn:${AWS::Partition}:elasticache:${AWS::Region}:${AWS::AccountId}:";
    let cfn_resources: BTreeSet<String> = CLOUDFORMATION
        .match_indices(marker)
        .map(|(at, m)| {
            CLOUDFORMATION[at + m.len()..]
                .split(|c: char| c.is_whitespace() || c == '"')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(cfn_resources, json_resources);
    assert!(!json_resources.is_empty());
    // Unscoped grants are the same read-only ones in both.
    assert_eq!(
        IAM_POLICY.matches("\"Resource\": \"*\"").count(),
        CLOUDFORMATION.matches("Resource: \"*\"").count()
    );
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
        ],
    );
    let c = parse(&toml);
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
    // One writer for the store.
    assert!(CLOUDFORMATION.contains("DesiredCount: 1"));
    assert!(CLOUDFORMATION.contains("MinimumHealthyPercent: 0"));
    assert!(CLOUDFORMATION.contains("MaximumPercent: 100"));
    // The rule, the alarm and the bot agree on the description prefix.
    let prefix = built_in().alarms.description_prefix;
    assert!(CLOUDFORMATION.contains(&format!("description: [{{ prefix: \"{prefix}\" }}]")));
    assert!(CLOUDFORMATION.contains(&format!("AlarmDescription: !Sub \"{prefix} ")));
    assert!(CLOUDFORMATION.contains("detail-type: [CloudWatch Alarm State Change]"));
    assert!(CLOUDFORMATION.contains("MetricName: DatabaseMemoryUsagePercentage"));
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
                ["Cargo.toml", "Cargo.lock", "src"].contains(source),
                "`{line}` copies more than Cargo.toml, Cargo.lock and src/ (there is no .dockerignore)"
            );
        }
    }
    let port = built_in().listen.port();
    assert!(DOCKERFILE.contains(&format!("EXPOSE {port}\n")));
    assert!(DOCKERFILE.contains(&format!("http://127.0.0.1:{port}/healthz")));
    assert!(DOCKERFILE.contains(&format!("VOLUME [\"{STORE_DIR}\"]")));
    assert!(DOCKERFILE.contains("USER 10001:10001"));
    assert!(DOCKERFILE.contains("ENTRYPOINT [\"redis-autoscaler\"]"));
    assert!(DOCKERFILE.contains(&format!("CMD [\"serve\", \"--config\", \"{CONFIG_PATH}\"]")));
}
