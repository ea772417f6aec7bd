//! The cluster's GPU nodes, one GPU each: a few warm ones that always exist, more that
//! a cluster autoscaler adds on demand (slowly) up to a limit and removes when they
//! have been free for a while.

#[derive(Debug, Clone, Copy, PartialEq)]
enum NodeState {
    Free {
        since: f64,
    },
    /// Being added; `claimed` while a pod waits for it. One whose pod was given back
    /// goes on being added, and the next pod that needs a GPU waits for it, as the
    /// scheduler binds a pending pod to the node the cluster autoscaler brings up.
    Provisioning {
        claimed: bool,
    },
    Busy,
    Removed {
        at: f64,
    },
}

#[derive(Debug, Clone)]
struct Node {
    /// Warm nodes are never removed; the others were added at this time.
    added_at: Option<f64>,
    state: NodeState,
}

/// Where a pod's GPU comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// A free node: the pod starts at once.
    Free,
    /// A node being added for it: the pod starts once the node is there.
    Provisioning,
    /// A node already being added for a pod given back since: the pod starts when it
    /// is there, with no node added for it.
    Joining,
}

pub struct GpuPool {
    nodes: Vec<Node>,
    max_nodes: usize,
    idle_timeout: f64,
}

impl GpuPool {
    pub fn new(warm: u32, max: u32, idle_timeout: f64) -> Self {
        let warm = usize::try_from(warm).unwrap_or(usize::MAX);
        let nodes = (0..warm).map(|_| Node { added_at: None, state: NodeState::Free { since: 0.0 } }).collect();
        Self { nodes, max_nodes: usize::try_from(max).unwrap_or(usize::MAX).max(warm), idle_timeout }
    }

    /// A GPU for a new pod: a free node, else a new one if the limit allows, else none
    /// (the pod is unschedulable).
    pub fn claim(&mut self, now: f64) -> Option<(usize, Placement)> {
        self.remove_idle(now);
        if let Some(index) = self.nodes.iter().position(|node| matches!(node.state, NodeState::Free { .. })) {
            self.nodes[index].state = NodeState::Busy;
            return Some((index, Placement::Free));
        }
        if let Some(index) =
            self.nodes.iter().position(|node| matches!(node.state, NodeState::Provisioning { claimed: false }))
        {
            self.nodes[index].state = NodeState::Provisioning { claimed: true };
            return Some((index, Placement::Joining));
        }
        let existing = self.nodes.iter().filter(|node| !matches!(node.state, NodeState::Removed { .. })).count();
        if existing >= self.max_nodes {
            return None;
        }
        self.nodes.push(Node { added_at: Some(now), state: NodeState::Provisioning { claimed: true } });
        Some((self.nodes.len() - 1, Placement::Provisioning))
    }

    /// A node finished provisioning and its pod takes it.
    pub fn occupy(&mut self, node: usize) {
        if let Some(node) = self.nodes.get_mut(node) {
            node.state = NodeState::Busy;
        }
    }

    /// The pod waiting for a node being added was given back: the node goes on being
    /// added, for the next pod that needs one.
    pub fn unclaim(&mut self, node: usize) {
        if let Some(node) = self.nodes.get_mut(node)
            && matches!(node.state, NodeState::Provisioning { .. })
        {
            node.state = NodeState::Provisioning { claimed: false };
        }
    }

    /// The node's pod is gone (or never came): the node is free.
    pub fn release(&mut self, node: usize, now: f64) {
        if let Some(node) = self.nodes.get_mut(node) {
            node.state = NodeState::Free { since: now };
        }
    }

    fn remove_idle(&mut self, now: f64) {
        for node in &mut self.nodes {
            if let NodeState::Free { since } = node.state
                && node.added_at.is_some()
                && now - since >= self.idle_timeout
            {
                node.state = NodeState::Removed { at: since + self.idle_timeout };
            }
        }
    }

    /// The GPU-seconds of the nodes added on demand, up to `end`: a cloud bills a node
    /// from its launch to its removal, idle or not, provisioning included. Pods' GPU
    /// time counts only what they hold; this counts what the cluster paid for the
    /// capacity a policy asked for, the idle timeout after its last pod included.
    pub fn added_node_seconds(&self, end: f64) -> f64 {
        self.nodes
            .iter()
            .filter_map(|node| {
                let added = node.added_at?;
                let gone = match node.state {
                    NodeState::Removed { at } => at,
                    NodeState::Free { since } => since + self.idle_timeout,
                    NodeState::Provisioning { .. } | NodeState::Busy => end,
                };
                Some((gone.min(end) - added).max(0.0))
            })
            // From +0.0: an empty `sum` of f64 is -0.0, which the tables print as "-0".
            .fold(0.0, |total, seconds| total + seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_nodes_first_then_new_nodes_up_to_the_limit() {
        let mut pool = GpuPool::new(1, 2, 600.0);
        assert_eq!(pool.claim(0.0), Some((0, Placement::Free)));
        assert_eq!(pool.claim(0.0), Some((1, Placement::Provisioning)));
        assert_eq!(pool.claim(0.0), None, "the cluster is at its limit");
        pool.occupy(1);
        pool.release(1, 10.0);
        assert_eq!(pool.claim(20.0), Some((1, Placement::Free)), "a recently freed node is reused");
    }

    #[test]
    fn a_node_being_added_for_a_pod_given_back_goes_to_the_next_pod() {
        let mut pool = GpuPool::new(0, 2, 600.0);
        assert_eq!(pool.claim(0.0), Some((0, Placement::Provisioning)));
        pool.unclaim(0);
        assert_eq!(pool.claim(5.0), Some((0, Placement::Joining)), "no second node launched");
        assert_eq!(pool.claim(6.0), Some((1, Placement::Provisioning)));
    }

    #[test]
    fn added_nodes_go_away_when_idle_but_warm_ones_stay() {
        let mut pool = GpuPool::new(1, 2, 600.0);
        let (warm, _) = pool.claim(0.0).expect("warm node");
        let (added, _) = pool.claim(0.0).expect("added node");
        pool.occupy(added);
        pool.release(warm, 0.0);
        pool.release(added, 0.0);
        assert_eq!(pool.claim(1000.0), Some((warm, Placement::Free)));
        assert_eq!(pool.claim(1000.0), Some((2, Placement::Provisioning)), "the idle added node was removed");
        // The first added node cost from 0 s to its removal at 600 s, idle for all of
        // it; the second from 1000 s to the end.
        assert_eq!(pool.added_node_seconds(1500.0), 600.0 + 500.0);
        assert_eq!(pool.added_node_seconds(300.0), 300.0, "counted up to the end");
    }
}
