/* Route: the program delay-loads the API from ole32 (resolved at the first call). */

#include "routes.h"

ROUTE_TEST(route_delayload)
{
    const struct cancel_api api = { CoCancelCall, CoTestCancel, CoGetCancelObject, CoSetCancelObject };

    check_cancel_api("delay-loaded import", &api);
}
