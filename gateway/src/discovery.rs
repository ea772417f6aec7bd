//! The pods of a Service, from its EndpointSlices (`--service NAME`): a watch on the
//! `discovery.k8s.io/v1` EndpointSlices labelled `kubernetes.io/service-name=NAME` in
//! one namespace. The slices are kept by name, and every change hands the dispatcher the
//! whole set of pods ([`reports_from_slices`], a pure function); a relist replaces the
//! set at once, never piecemeal.
//!
//! When the apiserver cannot be reached or the watch fails, the gateway keeps the last
//! set it had, says so once per outage (a warning, and `matte_gateway_discovery_up` at
//! 0), and retries on kube-runtime's default back-off (0.8 s doubling to 30 s, jittered),
//! starting again with a list, as client-go's reflector does. Only `list` and `watch` on
//! EndpointSlices in that namespace are needed.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, DefaultBackoff, Event};
use kube::{Api, Client, ResourceExt};
use matte_common::paths::PORT_NAME;

use crate::Error;
use crate::dispatcher::Dispatcher;
use crate::endpoints::EndpointSource;
use crate::upstream_state::EndpointReport;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Every pod the slices list, once each, sorted by address: each address of each
/// endpoint with the slice's port (the one named `http`, or the slice's only port).
///
/// An endpoint is ready when `conditions.ready` is true or absent (absent means ready,
/// as for Kubernetes) and it is not terminating. An address listed twice (in two slices,
/// or twice in one) is one pod, ready if any listing says so, terminating if any does.
/// One neither ready nor terminating is starting: a slice lists a new pod before its
/// readiness probe passes.
/// IPv6 addresses come bracketed (`[fd00::1]:8080`). What cannot be a pod's address is
/// left out: a slice without a usable port, an address that does not match its slice's
/// address type, a slice of FQDN or an unknown address type, and an address no pod
/// has (`pod_ip`).
pub fn reports_from_slices<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> Vec<EndpointReport> {
    let mut pods: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for slice in slices {
        let Some(port) = slice_port(slice) else { continue };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            let terminating = conditions.and_then(|c| c.terminating) == Some(true);
            let ready = conditions.and_then(|c| c.ready) != Some(false) && !terminating;
            for address in &endpoint.addresses {
                let Some(host) = host_of(&slice.address_type, address) else { continue };
                let pod = pods.entry(format!("{host}:{port}")).or_insert((false, false));
                *pod = (pod.0 || ready, pod.1 || terminating);
            }
        }
    }
    pods.into_iter()
        .map(|(address, (ready, terminating))| EndpointReport { address, ready, starting: !ready && !terminating })
        .collect()
}

/// The port of a slice's endpoints: the TCP port named `http`, else the slice's only
/// port; `None` when there is neither (no ports, several without `http`, or a port
/// without a number, which in a slice means "every port").
pub fn slice_port(slice: &EndpointSlice) -> Option<u16> {
    let ports = slice.ports.as_deref().unwrap_or_default();
    let tcp = |port: &&k8s_openapi::api::discovery::v1::EndpointPort| {
        port.protocol.as_deref().is_none_or(|protocol| protocol == "TCP")
    };
    let chosen = match ports.iter().find(|port| port.name.as_deref() == Some(PORT_NAME)) {
        Some(named) => Some(named),
        None if ports.len() == 1 => ports.first(),
        None => None,
    };
    let number = chosen.filter(tcp)?.port?;
    u16::try_from(number).ok().filter(|&port| port != 0)
}

/// The host part of `HOST:PORT` for an address of `address_type`, or `None` when the
/// address is not one of that type or not a pod's.
///
/// FQDN slices are left out as kube-proxy leaves them out: a name is resolved by
/// whatever DNS answers, so a slice of one, which anyone allowed to write EndpointSlices
/// in the namespace can make, would send clients' images to any host at all.
fn host_of(address_type: &str, address: &str) -> Option<String> {
    match address_type {
        "IPv4" => address.parse::<Ipv4Addr>().ok().filter(|&ip| pod_ip(IpAddr::V4(ip))).map(|ip| ip.to_string()),
        "IPv6" => address.parse::<Ipv6Addr>().ok().filter(|&ip| pod_ip(IpAddr::V6(ip))).map(|ip| format!("[{ip}]")),
        _ => None,
    }
}

/// Whether `ip` can be a pod's. The apiserver already refuses loopback, link-local and
/// unspecified addresses in an EndpointSlice; they are checked again here because one
/// let through would send clients' images to the gateway's own pod, to its node's
/// metadata service (169.254.169.254) or to a multicast group. An IPv6 address that
/// maps an IPv4 one is judged as that.
fn pod_ip(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let special = ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || match ip {
            IpAddr::V4(ip) => ip.is_link_local() || ip.is_broadcast(),
            IpAddr::V6(ip) => ip.is_unicast_link_local(),
        };
    !special
}

/// A Service name as Kubernetes accepts it (an RFC 1035 label), so that it can go into
/// a label selector as it is.
pub fn check_service_name(name: &str) -> Result<(), Error> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-');
    if valid { Ok(()) } else { Err(Error::ServiceName(name.to_owned())) }
}

/// The pods of Service `service` in `namespace`, from its EndpointSlices.
pub struct EndpointSliceSource {
    api: Api<EndpointSlice>,
    service: String,
    namespace: String,
}

impl EndpointSliceSource {
    /// A source with the client configuration inferred as kubectl and in-cluster clients
    /// do (`KUBECONFIG` or `~/.kube/config`, else the pod's ServiceAccount). The
    /// namespace is `namespace`, else `POD_NAMESPACE` (the caller reads it), else the
    /// configuration's default namespace. Nothing is requested from the apiserver yet.
    pub async fn connect(service: String, namespace: Option<String>) -> Result<EndpointSliceSource, Error> {
        check_service_name(&service)?;
        let config = kube::Config::infer()
            .await
            .map_err(|e| Error::Discovery(format!("no Kubernetes client configuration: {e}")))?;
        let namespace = namespace.filter(|ns| !ns.is_empty()).unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config)
            .map_err(|e| Error::Discovery(format!("cannot build the Kubernetes client: {e}")))?;
        Ok(EndpointSliceSource::new(client, service, &namespace))
    }

    pub fn new(client: Client, service: String, namespace: &str) -> EndpointSliceSource {
        EndpointSliceSource { api: Api::namespaced(client, namespace), service, namespace: namespace.to_owned() }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

impl EndpointSource for EndpointSliceSource {
    async fn run(self, dispatcher: Arc<Dispatcher>) {
        // Not narrowed to the slices `endpointslice.kubernetes.io/managed-by` says the
        // EndpointSlice controller wrote: a Service without a selector has slices written
        // by whoever runs it, and whoever may write a slice may write that label too.
        let selector = format!("{SERVICE_NAME_LABEL}={}", self.service);
        let config = watcher::Config::default().labels(&selector);
        let mut view = SliceView::new(dispatcher, &self.service, &self.namespace);
        let mut backoff = DefaultBackoff::default();
        loop {
            // Each (re)start lists first, so that what changed while the watch was down
            // arrives as one consistent set.
            let mut events = std::pin::pin!(watcher::watcher(self.api.clone(), config.clone()));
            let failure = loop {
                match events.next().await {
                    Some(Ok(event)) => {
                        if view.apply(event) {
                            backoff.reset();
                        }
                    }
                    // The resource version is too old: the watcher lists again by itself,
                    // and that is no outage.
                    Some(Err(watcher::Error::WatchError(status))) if status.code == 410 => {
                        tracing::debug!(service = %self.service, "watch expired (410 Gone): relisting");
                    }
                    Some(Err(error)) => break error.to_string(),
                    None => break "the watch stream ended".to_owned(),
                }
            };
            view.failed(&failure);
            let delay = backoff.next().unwrap_or(std::time::Duration::from_secs(30));
            tokio::time::sleep(delay).await;
        }
    }
}

/// The slices as last seen, and what the dispatcher and the operator were told.
struct SliceView {
    dispatcher: Arc<Dispatcher>,
    service: String,
    namespace: String,
    slices: BTreeMap<String, EndpointSlice>,
    /// Slices of a list under way (between `Init` and `InitDone`).
    relist: Option<BTreeMap<String, EndpointSlice>>,
    published: Option<Vec<EndpointReport>>,
    /// `None` before the first list or failure.
    healthy: Option<bool>,
}

impl SliceView {
    fn new(dispatcher: Arc<Dispatcher>, service: &str, namespace: &str) -> SliceView {
        dispatcher.set_discovery_up(false);
        SliceView {
            dispatcher,
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            slices: BTreeMap::new(),
            relist: None,
            published: None,
            healthy: None,
        }
    }

    /// Takes one watch event; true when it shows the apiserver answering.
    fn apply(&mut self, event: Event<EndpointSlice>) -> bool {
        match event {
            // Sent before the list is requested: it says nothing of the apiserver yet.
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(slice) => {
                self.warn_if_unusable(&slice);
                self.relist.get_or_insert_default().insert(slice.name_any(), slice);
                true
            }
            Event::InitDone => {
                self.slices = self.relist.take().unwrap_or_default();
                self.publish();
                self.succeeded();
                true
            }
            Event::Apply(slice) => {
                self.warn_if_unusable(&slice);
                self.slices.insert(slice.name_any(), slice);
                self.publish();
                self.succeeded();
                true
            }
            Event::Delete(slice) => {
                self.slices.remove(&slice.name_any());
                self.publish();
                self.succeeded();
                true
            }
        }
    }

    fn publish(&mut self) {
        let reports = reports_from_slices(self.slices.values());
        if self.published.as_ref() == Some(&reports) {
            return;
        }
        let ready = reports.iter().filter(|report| report.ready).count();
        tracing::info!(
            service = %self.service,
            namespace = %self.namespace,
            slices = self.slices.len(),
            ready,
            unready = reports.len() - ready,
            "endpoints changed"
        );
        self.dispatcher.update_endpoints(&reports);
        self.published = Some(reports);
    }

    fn succeeded(&mut self) {
        if self.healthy == Some(false) {
            tracing::info!(service = %self.service, namespace = %self.namespace, "EndpointSlice watch restored");
        }
        self.healthy = Some(true);
        self.dispatcher.set_discovery_up(true);
    }

    /// Once per outage a warning; every retry after it at debug level. The pods stay as
    /// they were.
    fn failed(&mut self, error: &str) {
        self.relist = None;
        if self.healthy != Some(false) {
            let pods = self.published.as_ref().map_or(0, Vec::len);
            tracing::warn!(
                service = %self.service,
                namespace = %self.namespace,
                %error,
                pods,
                "EndpointSlice watch failed: serving on the last known endpoints, retrying with back-off"
            );
        } else {
            tracing::debug!(service = %self.service, %error, "EndpointSlice watch still failing");
        }
        self.healthy = Some(false);
        self.dispatcher.set_discovery_up(false);
    }

    fn warn_if_unusable(&self, slice: &EndpointSlice) {
        if !slice.endpoints.is_empty() && !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            tracing::warn!(
                slice = %slice.name_any(),
                namespace = %self.namespace,
                address_type = %slice.address_type,
                "EndpointSlice is not of IPv4 or IPv6 addresses: its endpoints are ignored"
            );
        } else if !slice.endpoints.is_empty() && slice_port(slice).is_none() {
            tracing::warn!(
                slice = %slice.name_any(),
                namespace = %self.namespace,
                "EndpointSlice has no port named `{PORT_NAME}` and not exactly one port: its endpoints are ignored"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn slices(yaml: &str) -> Vec<EndpointSlice> {
        yaml.split("\n---\n").map(|doc| serde_yaml::from_str(doc).expect("a valid EndpointSlice")).collect()
    }

    fn report(address: &str, ready: bool) -> EndpointReport {
        EndpointReport { address: address.to_owned(), ready, starting: !ready }
    }

    fn terminating(address: &str) -> EndpointReport {
        EndpointReport { address: address.to_owned(), ready: false, starting: false }
    }

    #[test]
    fn conditions_decide_readiness_as_kubernetes_does() {
        let slices = slices(include_str!("../tests/fixtures/slices/conditions.yaml"));
        assert_eq!(
            reports_from_slices(&slices),
            [
                report("10.0.0.1:8080", true),  // ready: true
                report("10.0.0.2:8080", false), // ready: false: starting
                report("10.0.0.3:8080", true),  // no conditions at all
                report("10.0.0.4:8080", true),  // conditions without ready
                terminating("10.0.0.5:8080"),   // terminating, still serving
                terminating("10.0.0.6:8080"),   // terminating with ready absent
            ]
        );
    }

    #[test]
    fn the_port_is_the_one_named_http_or_the_only_one() {
        let slices = slices(include_str!("../tests/fixtures/slices/ports.yaml"));
        assert_eq!(
            reports_from_slices(&slices),
            [report("10.0.1.1:8080", true), report("10.0.1.2:9000", true), report("10.0.1.3:7000", true)]
        );
        let by_name: BTreeMap<_, _> = slices.iter().map(|s| (s.name_any(), slice_port(s))).collect();
        assert_eq!(by_name["named-http"], Some(8080));
        assert_eq!(by_name["only-port"], Some(9000));
        assert_eq!(by_name["unnamed-only-port"], Some(7000));
        assert_eq!(by_name["two-ports-no-http"], None);
        assert_eq!(by_name["no-ports"], None);
        assert_eq!(by_name["every-port"], None);
        assert_eq!(by_name["udp-http"], None);
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let slices = slices(include_str!("../tests/fixtures/slices/ipv6.yaml"));
        assert_eq!(reports_from_slices(&slices), [report("[fd00::a:1]:8080", false), report("[fd00::b:1]:8080", true)]);
    }

    #[test]
    fn an_address_in_two_slices_is_one_pod_ready_if_either_says_so() {
        let slices = slices(include_str!("../tests/fixtures/slices/duplicates.yaml"));
        assert_eq!(
            reports_from_slices(&slices),
            [report("10.0.2.1:8080", true), report("10.0.2.2:8080", false), report("10.0.2.3:8080", true)]
        );
        // The order of the slices does not matter.
        assert_eq!(reports_from_slices(slices.iter().rev()), reports_from_slices(&slices));
    }

    #[test]
    fn fqdn_slices_and_mismatched_addresses_are_left_out() {
        let slices = slices(include_str!("../tests/fixtures/slices/address_types.yaml"));
        assert_eq!(reports_from_slices(&slices), [report("10.0.3.1:8080", true)]);
    }

    #[test]
    fn loopback_link_local_unspecified_and_multicast_addresses_are_left_out() {
        let slices = slices(include_str!("../tests/fixtures/slices/special_addresses.yaml"));
        assert_eq!(reports_from_slices(&slices), [report("10.0.4.1:8080", true), report("[fd00::4:1]:8080", true)]);
    }

    #[test]
    fn empty_slices_give_no_pods() {
        let slices = slices(include_str!("../tests/fixtures/slices/empty.yaml"));
        assert!(reports_from_slices(&slices).is_empty());
        assert!(reports_from_slices(std::iter::empty()).is_empty());
    }

    #[test]
    fn every_report_is_an_address_the_gateway_accepts() {
        let mut all = Vec::new();
        for fixture in [
            include_str!("../tests/fixtures/slices/conditions.yaml"),
            include_str!("../tests/fixtures/slices/ports.yaml"),
            include_str!("../tests/fixtures/slices/ipv6.yaml"),
            include_str!("../tests/fixtures/slices/duplicates.yaml"),
            include_str!("../tests/fixtures/slices/address_types.yaml"),
            include_str!("../tests/fixtures/slices/special_addresses.yaml"),
        ] {
            all.extend(reports_from_slices(&slices(fixture)));
        }
        for report in all {
            assert!(crate::endpoints::StaticSource::new(vec![report.address.clone()], Duration::from_secs(1)).is_ok());
        }
    }

    #[test]
    fn service_names_are_dns_labels() {
        for good in ["x-pods", "portraits-pods", "a1"] {
            assert!(check_service_name(good).is_ok(), "{good}");
        }
        for bad in ["", "X-pods", "-pods", "pods-", "1pods", "a,b", "a=b", &"a".repeat(64)] {
            assert!(check_service_name(bad).is_err(), "{bad}");
        }
    }

    /// The view's bookkeeping: a relist replaces the set at once, failures keep it.
    #[test]
    fn a_relist_replaces_the_set_at_once_and_a_failure_keeps_it() {
        let all = slices(include_str!("../tests/fixtures/slices/duplicates.yaml"));
        let dispatcher = Dispatcher::new(4);
        let mut view = SliceView::new(dispatcher.clone(), "x-pods", "default");
        assert!(!dispatcher.snapshot().discovery_up, "down until the first list");
        view.apply(Event::Init);
        view.apply(Event::InitApply(all[0].clone()));
        assert_eq!(dispatcher.snapshot().ready + dispatcher.snapshot().unready, 0, "nothing before InitDone");
        view.apply(Event::InitApply(all[1].clone()));
        view.apply(Event::InitDone);
        let snapshot = dispatcher.snapshot();
        assert_eq!((snapshot.ready, snapshot.unready, snapshot.discovery_up), (2, 1, true));

        view.failed("connection refused");
        let snapshot = dispatcher.snapshot();
        assert_eq!((snapshot.ready, snapshot.unready, snapshot.discovery_up), (2, 1, false), "kept while down");

        // The relist after the outage finds only the first slice: the second goes.
        view.apply(Event::Init);
        view.apply(Event::InitApply(all[0].clone()));
        assert_eq!(dispatcher.snapshot().ready, 2, "unchanged until the list is complete");
        view.apply(Event::InitDone);
        let snapshot = dispatcher.snapshot();
        assert_eq!((snapshot.ready, snapshot.unready, snapshot.discovery_up), (1, 1, true));

        view.apply(Event::Delete(all[0].clone()));
        assert_eq!(dispatcher.snapshot().ready + dispatcher.snapshot().unready, 0);
    }
}
