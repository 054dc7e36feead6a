//! Who may decide what: the authority rule every site applies to each event it applies, and
//! every agent to each event of its policy. Above [`crate::event`] and [`crate::trust`],
//! which know nothing of it.

use crate::trust::{KeyRing, TrustError};
use crate::SiteCode;

/// The authority rules for an event whose signature is verified, then its change to the ring:
/// a package, an advertisement or a site's machines may be changed by their creator or a
/// site above it, a target or group member must be in the origin's subtree, the catalog and
/// checkpoints come only from the top, and key events follow [`KeyRing::delegate`] and
/// [`KeyRing::revoke`]. Every site checks each event it applies by these rules, and every
/// agent each event of its policy.
pub fn authorize(ring: &mut KeyRing, env: &crate::event::EventEnvelope) -> Result<(), String> {
    use crate::event::{ConfigEvent, DistributionTarget};
    let o = env.origin;
    let Some(root) = ring.root() else {
        // Only the genesis can be the first; `delegate` takes nothing else.
        return match &env.body {
            ConfigEvent::SiteKeyDelegated(d) => ring.delegate(o, d).map_err(|e| e.to_string()),
            _ => Err(TrustError::NoGenesis { by: o }.to_string()),
        };
    };
    // A site this ring knows that is not `o` or below it.
    let outside = |s: SiteCode| ring.knows(s) && !ring.within(s, o);
    // An object created by `owner` may be changed by `owner` or a site above it.
    let owns = |owner: SiteCode| owner == o || (ring.knows(owner) && ring.within(owner, o));
    let refuse = |what: String| Err(format!("{o} has no authority over {what}"));
    match &env.body {
        ConfigEvent::PackageVersionPublished(v) if v.package.site != o => refuse(format!(
            "package {} (created by {})",
            v.package, v.package.site
        )),
        ConfigEvent::AdvertisementCreated(a) if a.id.site != o => refuse(format!(
            "advertisement {} (numbered by {})",
            a.id, a.id.site
        )),
        ConfigEvent::AdvertisementChanged(a) if !owns(a.id.site) => {
            refuse(format!("advertisement {} (created by {})", a.id, a.id.site))
        }
        ConfigEvent::AdvertisementDisabled { id } | ConfigEvent::AdvertisementEnabled { id }
            if !owns(id.site) =>
        {
            refuse(format!("advertisement {id} (created by {})", id.site))
        }
        ConfigEvent::PackageVersionRetired { package, .. }
        | ConfigEvent::PackagePriorityChanged { package, .. }
        | ConfigEvent::SenderBoost { package, .. }
            if !owns(package.site) =>
        {
            refuse(format!("package {package} (created by {})", package.site))
        }
        ConfigEvent::DistributionTargetsAdded { targets, .. }
        | ConfigEvent::DistributionTargetsRemoved { targets, .. } => {
            for t in targets {
                let site = match t {
                    DistributionTarget::Site(s) => Some(*s),
                    DistributionTarget::DistributionPoint { site, .. } => Some(*site),
                    DistributionTarget::DpGroup(_) => None,
                };
                if let Some(s) = site.filter(|s| outside(*s)) {
                    return refuse(format!("{t}: {s} is outside its subtree"));
                }
            }
            Ok(())
        }
        ConfigEvent::DpGroupMembersChanged { added, removed, .. } => {
            match added.iter().chain(removed).find(|d| outside(d.site)) {
                Some(d) => refuse(format!("DP {d}: {} is outside its subtree", d.site)),
                None => Ok(()),
            }
        }
        ConfigEvent::CatalogDelta(_) | ConfigEvent::Checkpoint { .. } if o != root => refuse(
            format!("the {}: only the top ({root}) issues it", env.body.kind()),
        ),
        ConfigEvent::MachineApproved { site, .. } | ConfigEvent::AutoApproval { site, .. }
            if !owns(*site) =>
        {
            refuse(format!("the machines of {site}"))
        }
        ConfigEvent::SiteKeyDelegated(d) => ring.delegate(o, d).map_err(|e| e.to_string()),
        ConfigEvent::SiteKeyRevoked { site } => ring.revoke(o, *site).map_err(|e| e.to_string()),
        _ => Ok(()),
    }
}
