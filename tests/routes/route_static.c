/* Route: the program imports the API from ole32 statically, as MSVC/mingw link it. */

#include "routes.h"

ROUTE_TEST(route_static)
{
    const struct cancel_api api = { CoCancelCall, CoTestCancel, CoGetCancelObject, CoSetCancelObject };

    check_cancel_api("static import", &api);
}
