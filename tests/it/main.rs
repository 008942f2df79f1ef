//! relayq's integration tests, one binary: each module is one behaviour,
//! driving the real `relayq` binary or its library over loopback with the
//! harness in `common` (temporary spools, fake MX servers, an in-process DNS
//! server). One binary links the harness once; its tests run on parallel
//! threads, so none may rely on process-wide state (environment, current
//! directory, fixed ports).

mod common;

mod bounce_classes;
mod check_config;
mod cluster_redis;
mod connection_pressure;
mod crash_soak;
mod dane;
mod dane_dnssec;
mod dane_refusals;
mod delivery_connections;
mod delivery_crash;
mod delivery_faults;
mod delivery_mx;
mod delivery_outcomes;
mod delivery_tls;
mod destination_config;
mod destination_feedback;
mod destination_rate;
mod destination_rollup;
mod destination_suspension;
mod dkim;
mod dkim_oversigning;
mod dkim_signature_field;
mod dkim_signing_failure;
mod dns_resolution;
mod doc_links;
mod durability;
mod generated_docs;
mod group_commit;
mod idempotency;
mod inbound_tls;
mod intake_limits;
mod intake_protocol;
mod lane_admission;
mod lanes;
mod long_lines;
mod message_metadata;
mod metrics;
mod monitoring_metrics;
mod mta_sts;
mod queue_at_scale;
mod queue_cli;
mod queue_rebuild;
mod reload;
mod sendmail;
mod smtp_auth;
mod smtp_client;
mod suppression;
mod suppression_bounces;
mod suppression_cluster;
mod systemd;
mod third_party_client;
mod tls_rpt;
mod tls_rpt_dane;
mod webhooks;
