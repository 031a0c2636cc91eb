//! The `elasticache-sim` command: arguments, the groups file, and serving until Ctrl-C.
//!
//! Parsing (arguments and the TOML groups file) is pure and tested here; [`run_cli`] is the
//! thin edge that reads the file, binds the address and waits for Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

use super::{Faults, MAX_REPLICAS, ModifyFault, SimConfig, SimGroup, SnapshotSelector};
use crate::domain::{NodeType, ReplicationGroupId, format_duration, parse_duration};

/// Serve a simulated ElastiCache (Query protocol, as the AWS SDK and CLI speak it).
///
/// Point a client at it with `AWS_ENDPOINT_URL=http://127.0.0.1:4510` (any credentials).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4510")]
    pub listen: SocketAddr,

    /// A replication group to simulate (repeatable). REPLICAS defaults to 1. Without any
    /// --group or --groups-file, one group `prod-jobs=cache.r6g.large:1` is simulated.
    #[arg(long = "group", value_name = "ID=NODE_TYPE[:REPLICAS]", value_parser = SimGroup::parse_spec)]
    pub groups: Vec<SimGroup>,

    /// A TOML file of groups: `[[group]]` tables with `id`, `node_type`, and optionally
    /// `replicas` (default 1) and `shards` (0 or 1: cluster mode disabled).
    #[arg(long, value_name = "PATH")]
    pub groups_file: Option<PathBuf>,

    /// How long a snapshot stays `creating`.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration_arg)]
    pub snapshot_duration: Duration,

    /// How long a modification keeps its group `modifying`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration_arg)]
    pub modify_duration: Duration,

    /// Fraction of all calls answered `Throttling` (0.0 – 1.0).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0, value_parser = fraction_arg)]
    pub throttle: f64,

    /// Seed for choosing which calls are throttled.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Snapshots of this group end `failed` (repeatable).
    #[arg(long, value_name = "GROUP")]
    pub fail_snapshot: Vec<ReplicationGroupId>,

    /// Modifications of this group fail: refused with CODE (e.g.
    /// InsufficientCacheClusterCapacity), or without CODE accepted and then reverted.
    #[arg(long, value_name = "GROUP[=CODE]", value_parser = FailModifyArg::parse)]
    pub fail_modify: Vec<FailModifyArg>,

    /// At most this many manual snapshots; beyond it, SnapshotQuotaExceededFault.
    #[arg(long, value_name = "N")]
    pub snapshot_quota: Option<usize>,
}

/// `--fail-modify GROUP[=CODE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailModifyArg {
    pub group: ReplicationGroupId,
    pub fault: ModifyFault,
}

impl FailModifyArg {
    pub fn parse(s: &str) -> Result<FailModifyArg, String> {
        let (group, fault) = match s.split_once('=') {
            None => (s, ModifyFault::Revert),
            Some((g, code)) => {
                let code = code.trim();
                let valid = !code.is_empty()
                    && code.len() <= 64
                    && code.bytes().all(|b| b.is_ascii_alphanumeric());
                if !valid {
                    return Err(format!(
                        "`{code}` is not an AWS error code (like InsufficientCacheClusterCapacity)"
                    ));
                }
                (g, ModifyFault::reject(code))
            }
        };
        let group = ReplicationGroupId::parse(group).map_err(|e| e.to_string())?;
        Ok(FailModifyArg { group, fault })
    }
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn fraction_arg(s: &str) -> Result<f64, String> {
    let f: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number between 0.0 and 1.0"))?;
    super::check_fraction(f).map_err(|e| e.to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupsFile {
    #[serde(default)]
    group: Vec<GroupEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupEntry {
    id: ReplicationGroupId,
    node_type: NodeType,
    #[serde(default = "one")]
    replicas: u8,
    #[serde(default)]
    shards: u8,
}

fn one() -> u8 {
    1
}

/// Parse a groups file's text. Unknown keys are an error that names the key.
pub fn parse_groups_file(text: &str) -> Result<Vec<SimGroup>, String> {
    let file: GroupsFile = toml::from_str(text).map_err(|e| e.to_string())?;
    file.group
        .into_iter()
        .map(|e| {
            if e.replicas > MAX_REPLICAS {
                return Err(format!(
                    "group {}: replicas = {}, but ElastiCache allows at most {MAX_REPLICAS}",
                    e.id, e.replicas
                ));
            }
            Ok(SimGroup::new(e.id, e.node_type)
                .replicas(e.replicas)
                .shards(e.shards))
        })
        .collect()
}

impl SimArgs {
    /// The simulator's configuration, given the groups file's text when one was named.
    pub fn to_config(&self, groups_file: Option<&str>) -> anyhow::Result<SimConfig> {
        let mut groups = self.groups.clone();
        if let (Some(path), Some(text)) = (&self.groups_file, groups_file) {
            let from_file =
                parse_groups_file(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            groups.extend(from_file);
        }
        if groups.is_empty() {
            groups.push(SimGroup::new(
                ReplicationGroupId::parse("prod-jobs").expect("a valid id"),
                NodeType::parse("cache.r6g.large").expect("a valid node type"),
            ));
        }
        let faults = Faults {
            failing_snapshots: self
                .fail_snapshot
                .iter()
                .cloned()
                .map(SnapshotSelector::OfGroup)
                .collect(),
            failing_modifications: self
                .fail_modify
                .iter()
                .map(|f| (f.group.clone(), f.fault.clone()))
                .collect(),
            snapshot_quota: self.snapshot_quota,
            ..Faults::default()
        };
        let config = SimConfig {
            groups,
            snapshot_duration: self.snapshot_duration,
            modify_duration: self.modify_duration,
            throttle_fraction: self.throttle,
            seed: self.seed,
            faults,
            log_calls: true,
            ..SimConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}

/// Serve the simulator until Ctrl-C, logging every call.
pub async fn run_cli(args: SimArgs) -> anyhow::Result<()> {
    let text = match &args.groups_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the groups file {}", path.display()))?,
        ),
        None => None,
    };
    let config = args.to_config(text.as_deref())?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let groups: Vec<String> = config
        .groups
        .iter()
        .map(|g| {
            let shards = if g.cluster_mode_enabled() {
                format!("{} shards × ", g.shards)
            } else {
                String::new()
            };
            format!(
                "{} ({}, {shards}1 primary + {} replicas)",
                g.id, g.node_type, g.replicas
            )
        })
        .collect();
    let sim = super::spawn_on(listener, config.clone()).await?;
    tracing::info!(
        endpoint = %sim.endpoint(),
        groups = %groups.join(", "),
        snapshot_duration = %format_duration(config.snapshot_duration),
        modify_duration = %format_duration(config.modify_duration),
        throttle = config.throttle_fraction,
        "ElastiCache simulator listening; set AWS_ENDPOINT_URL={} to use it",
        sim.endpoint()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!("Ctrl-C: stopping the ElastiCache simulator");
    sim.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    fn parse(args: &[&str]) -> Result<SimArgs, clap::Error> {
        let mut argv = vec!["elasticache-sim"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| c.sim)
    }

    #[test]
    fn defaults_listen_on_loopback_with_seconds_long_work_and_one_group() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.listen, "127.0.0.1:4510".parse().unwrap());
        assert_eq!(args.snapshot_duration, Duration::from_secs(5));
        assert_eq!(args.modify_duration, Duration::from_secs(10));
        assert_eq!(args.throttle, 0.0);
        let config = args.to_config(None).unwrap();
        assert_eq!(config.groups.len(), 1);
        assert_eq!(config.groups[0].id.as_str(), "prod-jobs");
        assert!(config.log_calls);
    }

    #[test]
    fn every_flag_reaches_the_config() {
        let args = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--group",
            "prod-jobs=cache.r6g.large:2",
            "--group",
            "cache-b=cache.m6g.xlarge",
            "--snapshot-duration",
            "200ms",
            "--modify-duration",
            "1m",
            "--throttle",
            "0.25",
            "--seed",
            "42",
            "--fail-snapshot",
            "prod-jobs",
            "--fail-modify",
            "prod-jobs",
            "--fail-modify",
            "cache-b=InsufficientCacheClusterCapacity",
            "--snapshot-quota",
            "3",
        ])
        .unwrap();
        let config = args.to_config(None).unwrap();
        assert_eq!(config.groups.len(), 2);
        assert_eq!(config.groups[0].replicas, 2);
        assert_eq!(config.groups[1].replicas, 1);
        assert_eq!(config.snapshot_duration, Duration::from_millis(200));
        assert_eq!(config.modify_duration, Duration::from_secs(60));
        assert_eq!(config.throttle_fraction, 0.25);
        assert_eq!(config.seed, 42);
        let prod = ReplicationGroupId::parse("prod-jobs").unwrap();
        let b = ReplicationGroupId::parse("cache-b").unwrap();
        assert!(
            config
                .faults
                .failing_snapshots
                .contains(&SnapshotSelector::OfGroup(prod.clone()))
        );
        assert_eq!(
            config.faults.failing_modifications[&prod],
            ModifyFault::Revert
        );
        assert_eq!(
            config.faults.failing_modifications[&b],
            ModifyFault::reject("InsufficientCacheClusterCapacity")
        );
        assert_eq!(config.faults.snapshot_quota, Some(3));
    }

    #[test]
    fn bad_values_are_refused_when_parsing_arguments() {
        for bad in [
            &["--throttle", "1.5"][..],
            &["--throttle", "lots"],
            &["--snapshot-duration", "5"],
            &["--group", "prod-jobs"],
            &["--group", "prod-jobs=cache.r6g.large:x"],
            &["--fail-modify", "prod-jobs=not a code"],
            &["--fail-modify", "prod-jobs="],
            &["--listen", "localhost"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn a_group_with_a_node_type_aws_does_not_offer_is_a_config_error() {
        let args = parse(&["--group", "prod-jobs=cache.x9z.large"]).unwrap();
        let err = args.to_config(None).unwrap_err();
        assert!(format!("{err:#}").contains("cache.x9z.large"), "{err:#}");
    }

    #[test]
    fn the_groups_file_lists_groups_with_defaults() {
        let groups = parse_groups_file(
            r#"
            [[group]]
            id = "prod-jobs"
            node_type = "cache.r6g.large"
            replicas = 2
            shards = 1

            [[group]]
            id = "sharded"
            node_type = "cache.m6g.large"
            shards = 3
            "#,
        )
        .unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!((groups[0].replicas, groups[0].shards), (2, 1));
        assert!(!groups[0].cluster_mode_enabled());
        assert_eq!((groups[1].replicas, groups[1].shards), (1, 3));
        assert!(groups[1].cluster_mode_enabled());
        assert_eq!(parse_groups_file("").unwrap(), vec![]);
    }

    #[test]
    fn the_groups_file_rejects_unknown_keys_by_name_and_bad_values() {
        let err = parse_groups_file(
            "[[group]]\nid = \"a\"\nnode_type = \"cache.r6g.large\"\nreplica = 1\n",
        )
        .unwrap_err();
        assert!(err.contains("replica"), "{err}");
        let err = parse_groups_file("[[groups]]\nid = \"a\"\n").unwrap_err();
        assert!(err.contains("groups"), "{err}");
        assert!(parse_groups_file("[[group]]\nid = \"a\"\nnode_type = \"large\"\n").is_err());
        assert!(parse_groups_file("[[group]]\nnode_type = \"cache.r6g.large\"\n").is_err());
        assert!(
            parse_groups_file(
                "[[group]]\nid = \"a\"\nnode_type = \"cache.r6g.large\"\nreplicas = 9\n"
            )
            .is_err()
        );
    }

    #[test]
    fn file_groups_are_added_to_command_line_groups() {
        let args = parse(&[
            "--group",
            "a=cache.r6g.large",
            "--groups-file",
            "groups.toml",
        ])
        .unwrap();
        let config = args
            .to_config(Some(
                "[[group]]\nid = \"b\"\nnode_type = \"cache.r6g.large\"\n",
            ))
            .unwrap();
        let ids: Vec<&str> = config.groups.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        let dup = args
            .to_config(Some(
                "[[group]]\nid = \"a\"\nnode_type = \"cache.r6g.large\"\n",
            ))
            .unwrap_err();
        assert!(format!("{dup:#}").contains("configured twice"), "{dup:#}");
    }
}
